"""`make demo`'s runs belong to the code location that `make dev` loads, so the UI shows them (Overview timeline).

`scripts/demo.py` runs on one day and one symbol (ingest and features, no model days); then the `dagster-graphql`
CLI, which loads workspace.yaml as the webserver does and answers with the webserver's own GraphQL schema, must file
the run under a location and job of that workspace. The timeline drops runs whose `repositoryOrigin` is null or unknown.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import yaml
from conftest import REPO_ROOT, pipeline_env

from pipeline.definitions import defs

DAGSTER_GRAPHQL = str(Path(sys.executable).with_name("dagster-graphql"))
DEMO = REPO_ROOT / "scripts" / "demo.py"
DAY = "2024-07-05"
# The runs and the workspace's locations, as the Overview timeline asks for them.
QUERY = """
{
  workspaceOrError { ... on Workspace { locationEntries { name locationOrLoadError {
    ... on RepositoryLocation { repositories { name jobs { name } } }
    ... on PythonError { message } } } } }
  runsOrError { ... on Runs { results { runId status pipelineName
    repositoryOrigin { repositoryLocationName repositoryName } } } }
}
"""


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, str], dg.DagsterRun]:
    """`scripts/demo.py` on one trading day and one symbol, without model days: its ingest-and-features run."""
    inherited = {k: v for k, v in os.environ.items() if k != "PIPELINE_SYNTHETIC_ALPHA"}
    env = {**inherited, **pipeline_env(tmp_path_factory.mktemp("demo")), "PIPELINE_SOURCE": "synthetic",
           "PIPELINE_SYNTHETIC_SYMBOLS": "SPY", "PIPELINE_SYNTHETIC_SNAPSHOT_MINUTES": "60"}
    done = subprocess.run(
        [sys.executable, str(DEMO), "--first", DAY, "--last", DAY, "--model-days", "0"], cwd=REPO_ROOT, env=env,
        capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert "raw.trades" in done.stdout and "warehouse:" in done.stdout
    # The demo's market is labelled as the control it is (the planted signal a model can earn from).
    assert "alpha 0.25 (the positive control" in done.stdout
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        (run,) = instance.get_runs()
    return env, run


def test_demo_run_succeeds_as_a_single_run_range(demo_run) -> None:
    _, run = demo_run
    assert run.status == dg.DagsterRunStatus.SUCCESS
    # One trading day as a single-run range, like a backfill of ingest and features launched from the UI.
    assert run.tags["dagster/asset_partition_range_start"] == run.tags["dagster/asset_partition_range_end"] == DAY
    data = dg.AssetSelection.groups("ingest", "features").resolve(defs.resolve_asset_graph())
    assert run.asset_selection == data


def test_demo_run_is_filed_under_the_workspace_location(demo_run, tmp_path: Path) -> None:
    env, run = demo_run
    answer = tmp_path / "answer.json"
    done = subprocess.run(
        [DAGSTER_GRAPHQL, "-w", "workspace.yaml", "-t", QUERY, "-o", str(answer)], cwd=REPO_ROOT,
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    data = json.loads(answer.read_text())["data"]
    jobs = {
        (entry["name"], repo["name"]): {job["name"] for job in repo["jobs"]}
        for entry in data["workspaceOrError"]["locationEntries"]
        for repo in entry["locationOrLoadError"]["repositories"]
    }
    (seen,) = [r for r in data["runsOrError"]["results"] if r["runId"] == run.run_id]
    origin = seen["repositoryOrigin"]
    assert origin is not None, "the run has no code location: the Overview timeline leaves it out"
    assert (origin["repositoryLocationName"], origin["repositoryName"]) in jobs
    assert seen["pipelineName"] in jobs[(origin["repositoryLocationName"], origin["repositoryName"])]
    workspace = yaml.safe_load((REPO_ROOT / "workspace.yaml").read_text())
    assert origin["repositoryLocationName"] == workspace["load_from"][0]["python_module"]["location_name"]
