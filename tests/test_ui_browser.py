"""A person at the UI: `dagster dev` on workspace.yaml, driven by headless Chromium through Playwright.

Starts the UI (webserver and daemon) on a free port with a temp lake and Dagster home, checks that the asset graph
shows every group of the code location, launches one trading day of `raw/trades` from the asset's Materialize
dialog, waits until the run's page says it succeeded, and then finds the rows in the warehouse.

Needs a Chromium binary (Debian's `chromium`; `.ci/run` installs it): Playwright's own browser download is not
used. Skips, saying so, where there is none.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import NamedTuple

import dagster as dg
import pytest
from conftest import load_script, pipeline_env, require_system_package
from playwright.sync_api import Page, expect

from pipeline.definitions import defs
from pipeline.lake import Warehouse

ui_helpers = load_script("scripts/ui_screenshots.py")
DAY = "2024-07-05"
LOCATION = "rl_trading_pipeline"
# Generous: on a busy 2-core machine the UI first loads the code location (torch and all), and the run queues behind
# the daemon's next tick before its worker process starts.
UI_TIMEOUT_MS = 180_000
RUN_TIMEOUT_MS = 300_000


class UI(NamedTuple):
    url: str
    env: dict[str, str]
    chromium: str


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UI]:
    """`dagster dev -w workspace.yaml` on a free port, with a temp lake and Dagster home."""
    chromium = ui_helpers.chromium_path()
    if chromium is None:
        require_system_package("no chromium binary on PATH: install Debian's `chromium` (apt-get install -y "
                               "chromium; .ci/run does)")
    root = tmp_path_factory.mktemp("ui")
    # One symbol keeps the launched run short; the synthetic source needs no network.
    env = {**os.environ, **pipeline_env(root), "PIPELINE_SOURCE": "synthetic", "PIPELINE_SYNTHETIC_SYMBOLS": "SPY"}
    with ui_helpers.dagster_dev(env, root / "dagster_dev.log") as url:
        yield UI(url, env, chromium)


@pytest.fixture
def page(ui: UI) -> Iterator[Page]:
    with ui_helpers.browser_page(ui.chromium, timeout_ms=UI_TIMEOUT_MS) as page:
        yield page


def test_asset_graph_shows_every_group(ui: UI, page: Page) -> None:
    graph = defs.resolve_asset_graph()
    groups = {graph.get(key).group_name for key in graph.get_all_asset_keys()}
    assert {"ingest", "features", "training"} <= groups
    page.goto(f"{ui.url}/asset-groups")
    for group in sorted(groups):
        expect(page.get_by_text(group, exact=True).first).to_be_visible()


def test_materialize_one_partition_from_the_ui(ui: UI, page: Page) -> None:
    page.goto(f"{ui.url}/assets/raw/trades")
    page.get_by_role("button", name="Materialize…").click()
    dialog = page.get_by_role("dialog")
    # The dialog offers the last 90 days first; July 2024 is further back.
    dialog.get_by_role("button", name="Show all partitions").click()
    partitions = dialog.get_by_role("textbox").first
    partitions.fill(DAY)
    partitions.press("Enter")
    dialog.get_by_role("button", name="Launch 1 run").click()
    # The toast that confirms the launch links to the run's page.
    page.get_by_text(re.compile(r"^Launched run ")).wait_for()
    page.get_by_role("link", name="View", exact=True).click()
    expect(page).to_have_url(re.compile(r"/runs/[0-9a-f-]{36}$"))
    run_id = page.url.rsplit("/", 1)[-1]
    status = page.get_by_text(re.compile(r"^(Success|Failure|Canceled)$")).first
    status.wait_for(timeout=RUN_TIMEOUT_MS)
    assert status.inner_text() == "Success", f"run {run_id} ended {status.inner_text()} in the UI"

    with dg.DagsterInstance.from_config(ui.env["DAGSTER_HOME"]) as instance:
        run = instance.get_run_by_id(run_id)
    assert run is not None and run.status == dg.DagsterRunStatus.SUCCESS
    assert run.tags["dagster/partition"] == DAY
    assert run.remote_job_origin.location_name == LOCATION
    store = Warehouse(Path(ui.env["PIPELINE_DATA_LAKE"]) / "warehouse.duckdb")
    landed = store.query("SELECT trading_day, count(*) AS n FROM raw.trades GROUP BY 1")
    assert landed["trading_day"].to_list() == [date.fromisoformat(DAY)]
    assert landed["n"][0] > 0
