"""`make demo`: the whole default graph, headless, on the embedded synthetic market; its runs show in `make dev`.

The market is the positive control: the synthetic market with a planted 10-minute momentum of alpha
DEMO_ALPHA (unless PIPELINE_SYNTHETIC_ALPHA says otherwise), a market where a model can earn after costs; at
PIPELINE_SYNTHETIC_ALPHA=0 (the negative control) nothing should be promoted.

1. One single-run backfill of ingest and features over the trading days the model days' datasets need.
2. Walk-forward: for each of the last `--model-days` trading days, in order, one run of training (and evaluation
   and deployment, where the code location has those groups) for that day's partition, with DEMO_RUN_CONFIG.
3. Prints each model day's candidate (its kind), the gate's verdict, its margin over the best baseline with the
   interval and its share of the cost-aware oracle (`demo_report`), the promotions, the warehouse tables and their
   row counts, and the deployment artifacts.

Runs are launched in this process against the code location that workspace.yaml names, the one `make dev` loads,
and carry its origin: the UI lists them under that location (Overview timeline, asset pages, run history).
`dagster asset materialize -m pipeline.definitions` stamps no code location on its runs, and the timeline drops
runs without one.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import dagster as dg
from dagster._cli.workspace.cli_target import get_repository_python_origin_from_cli_opts
from dagster._core.definitions.reconstruct import ReconstructableRepository
from dagster._core.execution.api import execute_run
from dagster._core.remote_origin import RemoteJobOrigin, RemoteRepositoryOrigin
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    PARTITION_NAME_TAG,
)
from dagster._core.workspace.load_target import WorkspaceFileTarget
from dagster._utils.hosted_user_process import recon_repository_from_origin
from dagster_shared.cli import PythonPointerOpts
from demo_report import print_model_days

from pipeline.contract.calendar import earlier_trading_days, trading_days
from pipeline.lake import Warehouse, warehouse_path
from pipeline.schedules import daily_selection

REPO_ROOT = Path(__file__).resolve().parents[1]
WORKSPACE = REPO_ROOT / "workspace.yaml"
DATA_GROUPS = ("ingest", "features")
# Run per trading day, in this order; groups the code location does not (yet) have are left out.
MODEL_GROUPS = ("training", "evaluation", "deployment")
DEFAULT_LAST = "2024-07-12"
DEFAULT_MODEL_DAYS = 2
DEMO_ALPHA = "0.25"
"""The planted signal of the demo's market: the positive control of tests/trading_controls.py."""
# Each model day's dataset: 10 train days, the default embargo (1), 2 selection days and 15 gate days, the fewest
# the gate gives an interval and a share of the oracle over (the defaults, 41 sessions, take longer to ingest).
DEMO_DATASET = {"window_days": 28, "embargo_days": 1, "selection_days": 2, "gate_days": 15}
# Run config of every model-day run: small budgets so the whole demo takes minutes on a 2-core CPU.
DEMO_RUN_CONFIG: dict[str, Any] = {
    "ops": {
        "training_dataset": {"config": DEMO_DATASET},
        "clstm_ppo_policy": {"config": {"total_timesteps": 61440}},
        "sb3_baselines": {"config": {"ppo_timesteps": 8192, "sac_timesteps": 300}},
    }
}
# Every model-day run: step processes fork from a server that imported the code location once, instead of each
# step importing torch and the definitions anew (seconds per step on a small machine). The server also imports
# what torch loads on first use: torch._dynamo, which the first Adam optimizer of a process imports (1.7 s
# measured, in every step that loads a CLSTM-PPO or SB3 model), and the ONNX exporter of `deployment_artifact`.
PRELOAD_MODULES = ("pipeline.definitions", "torch._dynamo", "torch.onnx._internal.exporter._core")
EXECUTION_CONFIG: dict[str, Any] = {
    "execution": {"config": {"multiprocess": {
        # A module this torch does not have (the exporter's is private) is left out rather than failing the run.
        "start_method": {"forkserver": {"preload_modules": [
            name for name in PRELOAD_MODULES if importlib.util.find_spec(name) is not None]}},
    }}}
}
# The ingest and features run in this process: its steps write the warehouse one at a time anyway (the duckdb
# pool), so separate processes bought nothing but their start-up, and in one process the synthetic market's days
# are generated once for the trades, quotes and option chains instead of once in each step's process.
DATA_EXECUTION_CONFIG: dict[str, Any] = {"execution": {"config": {"in_process": {}}}}
REPORT_SCHEMAS = ("raw", "quarantine", "features", "models", "evaluation")


class DemoRunFailed(RuntimeError):
    """A demo run did not succeed; the message names the step and the run."""


class CodeLocation:
    """The code location that a workspace file names, loaded in this process.

    `origin` is what the webserver knows the location by (its name comes from the workspace file); runs created here
    carry it, so the UI files them under the same location as runs launched from the UI.
    """

    def __init__(self, workspace: Path = WORKSPACE) -> None:
        (self.origin,) = WorkspaceFileTarget(paths=[str(workspace)]).create_origins()
        target = self.origin.loadable_target_origin
        pointer = PythonPointerOpts(
            python_file=target.python_file, module_name=target.module_name, package_name=target.package_name,
            working_directory=target.working_directory or str(workspace.parent), attribute=target.attribute,
        )
        self.repository: ReconstructableRepository = recon_repository_from_origin(
            get_repository_python_origin_from_cli_opts(pointer)
        )
        self.definitions = self.repository.get_definition()

    @property
    def name(self) -> str:
        return self.origin.location_name

    def groups(self) -> set[str]:
        graph = self.definitions.asset_graph
        return {graph.get(key).group_name for key in graph.get_all_asset_keys()}

    def launch(
        self,
        instance: dg.DagsterInstance,
        groups: Sequence[str],
        partition: str | tuple[str, str],
        run_config: Mapping[str, Any] | None = None,
    ) -> dg.DagsterRun:
        """Run the assets of `groups` for one partition, or a (first, last) range in one run; return the run.

        Executes in this process with the job's default (multiprocess) executor unless `run_config` says otherwise.
        """
        # The groups as the daily job runs them (the on-demand hyperparameter search is in a group of its own).
        keys = daily_selection(groups).resolve(self.definitions.asset_graph)
        job_def = self.definitions.get_implicit_job_def_for_assets(keys)
        if job_def is None:
            raise ValueError(f"groups {list(groups)} do not share one partitioning: launch them separately")
        if isinstance(partition, str):
            tags = {PARTITION_NAME_TAG: partition}
        else:
            tags = {ASSET_PARTITION_RANGE_START_TAG: partition[0], ASSET_PARTITION_RANGE_END_TAG: partition[1]}
        job = self.repository.get_reconstructable_job(job_def.name)
        run = instance.create_run_for_job(
            job_def=job_def,
            run_config=dict(run_config or {}),
            tags=tags,
            asset_selection=frozenset(keys),
            job_code_origin=job.get_python_origin(),
            remote_job_origin=RemoteJobOrigin(
                repository_origin=RemoteRepositoryOrigin(self.origin, self.definitions.name), job_name=job_def.name
            ),
        )
        execute_run(job, run, instance)
        return instance.get_run_by_id(run.run_id) or run


def blocked_promotions(instance: dg.DagsterInstance, run: dg.DagsterRun) -> list[str]:
    """What stopped a failed run, when every failed step failed only on a blocking asset check (the promotion gate
    said no: an honest outcome, not a broken demo); empty when any step failed for another reason."""
    failures = [
        record.dagster_event.step_failure_data.error
        for record in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
        if record.dagster_event and record.dagster_event.step_failure_data
    ]
    if not failures or any(error is None or error.cls_name != "DagsterAssetCheckFailedError" for error in failures):
        return []
    return [" ".join(error.message.partition(": ")[2].split()) for error in failures]


def run_step(
    location: CodeLocation,
    instance: dg.DagsterInstance,
    step: str,
    groups: Sequence[str],
    partition: str | tuple[str, str],
    run_config: Mapping[str, Any] | None = None,
) -> dg.DagsterRun:
    """One demo step: launch it, print how long it took, raise DemoRunFailed unless the run succeeded or only a
    blocking check held back what follows it."""
    shown = partition if isinstance(partition, str) else "...".join(partition)
    print(f"\n== {step}: {' + '.join(groups)} for {shown} (location {location.name})", flush=True)
    started = time.monotonic()
    run = location.launch(instance, groups, partition, run_config)
    took = f"{time.monotonic() - started:.0f} s"
    if run.status == dg.DagsterRunStatus.SUCCESS:
        print(f"== {step}: run {run.run_id} succeeded in {took}", flush=True)
    elif blocked := blocked_promotions(instance, run):
        print(f"== {step}: run {run.run_id} done in {took}; held back by a blocking check: {'; '.join(blocked)}",
              flush=True)
    else:
        raise DemoRunFailed(f"demo step '{step}' failed: run {run.run_id} ended {run.status.value}; "
                            "the Dagster log above (or the run's page in `make dev`) says which op")
    return run


def first_day(last: str, model_days: int) -> str:
    """The first trading day to ingest: the dataset window of the earliest of the `model_days` days ending at
    `last` (at least `last` itself)."""
    sessions = DEMO_DATASET["window_days"] + max(model_days, 1) - 2
    return earlier_trading_days(last, sessions)[0].isoformat() if sessions > 0 else last


def model_days(first: str, last: str, count: int) -> list[str]:
    """The last `count` trading days of the range, oldest first (walk-forward order)."""
    days = [day.isoformat() for day in trading_days(first, last)]
    if count > len(days):
        raise ValueError(f"--model-days {count} exceeds the {len(days)} trading days in {first}...{last}")
    return days[len(days) - count:] if count else []


def report(lake: Path, days: Sequence[str]) -> None:
    path = warehouse_path().resolve()
    store = Warehouse(path)
    if days:
        print_model_days(store, days)
    schemas = ", ".join(f"'{schema}'" for schema in REPORT_SCHEMAS)
    tables = store.query(
        "SELECT table_schema || '.' || table_name AS name FROM information_schema.tables "
        f"WHERE table_schema IN ({schemas}) ORDER BY name"
    )["name"].to_list()
    print(f"\nwarehouse: {path}")
    for table in tables:
        print(f"  {table:<32} {store.row_count(table):>10,} rows")
    deploy = lake / "artifacts" / "deploy"
    folders = sorted(p for p in deploy.iterdir() if p.is_dir()) if deploy.is_dir() else []
    print(f"\ndeployment artifacts: {deploy}" + ("" if folders else "  (none)"))
    for folder in folders:
        print(f"  {folder.name}/  {', '.join(sorted(p.name for p in folder.iterdir()))}")
    print(f"\nDagster instance (run history): {os.environ.get('DAGSTER_HOME')}")
    print("query it:  .venv/bin/python -c \"from pipeline.lake import Warehouse; "
          f"print(Warehouse('{path}').query('SELECT * FROM features.market LIMIT 5'))\"")
    print("browse it: make dev  (the demo's runs are on the Overview timeline, under the same code location)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--first", default=None, help="first trading day to ingest (partition key); unset: the "
                        "first day of the earliest model day's dataset window")
    parser.add_argument("--last", default=DEFAULT_LAST, help="last trading day to ingest (partition key)")
    parser.add_argument("--model-days", type=int, default=DEFAULT_MODEL_DAYS,
                        help="train (evaluate, deploy) on each of the last N trading days of the range, in order")
    args = parser.parse_args()
    args.first = args.first or first_day(args.last, args.model_days)
    # Runs and report() share one lake: pin a relative default to the repo's folder.
    os.environ.setdefault("PIPELINE_DATA_LAKE", str(REPO_ROOT / "data_lake"))
    os.environ.setdefault("PIPELINE_SOURCE", "synthetic")
    os.environ.setdefault("PIPELINE_SYNTHETIC_ALPHA", DEMO_ALPHA)
    if os.environ["PIPELINE_SOURCE"] == "synthetic":
        alpha = float(os.environ["PIPELINE_SYNTHETIC_ALPHA"])
        label = ("the negative control: nothing can earn after costs, so nothing should be promoted" if alpha == 0
                 else "the positive control: a planted 10-minute momentum a model can earn from after costs")
        print(f"market: the embedded synthetic market, alpha {alpha:g} ({label})", flush=True)
    lake = Path(os.environ["PIPELINE_DATA_LAKE"])
    days = model_days(args.first, args.last, args.model_days)
    location = CodeLocation()
    groups = [group for group in MODEL_GROUPS if group in location.groups()]
    started = time.monotonic()
    try:
        with dg.DagsterInstance.get() as instance:
            run_step(location, instance, "ingest and features", DATA_GROUPS, (args.first, args.last),
                     DATA_EXECUTION_CONFIG)
            for day in days:
                run_step(location, instance, f"model day {day}", groups, day, {**DEMO_RUN_CONFIG, **EXECUTION_CONFIG})
    except DemoRunFailed as failure:
        sys.exit(str(failure))
    print(f"\ndemo runs took {time.monotonic() - started:.0f} s; run config of the model days: "
          f"{json.dumps(DEMO_RUN_CONFIG)}")
    report(lake, days)


if __name__ == "__main__":
    main()
