"""The real `dagster asset materialize` CLI in subprocesses on a temp lake and Dagster home.

Runs use the in-process executor (run config) to keep the suite fast; the multiprocess default is exercised by
`make demo`. The concurrency test starts four CLI processes at once against one DuckDB file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from conftest import REPO_ROOT, pipeline_env

from pipeline.contract.calendar import trading_days
from pipeline.lake import Warehouse

DAGSTER = str(Path(sys.executable).with_name("dagster"))
SELECTION = "group:ingest or group:features"
IN_PROCESS = json.dumps({"execution": {"config": {"in_process": {}}}})
TABLES = (
    "raw.trades", "raw.quotes", "raw.bars", "raw.option_snapshots",
    "features.bars_1m", "features.market", "features.options",
)


def _command(*partition_args: str) -> list[str]:
    return [
        DAGSTER, "asset", "materialize", "-m", "pipeline.definitions", "--select", SELECTION,
        *partition_args, "--config-json", IN_PROCESS,
    ]


def _env(root: Path, symbols: str | None = None) -> dict[str, str]:
    # Hourly option snapshots keep the chains small; everything else is the default synthetic market.
    env = {**os.environ, **pipeline_env(root), "PIPELINE_SYNTHETIC_SNAPSHOT_MINUTES": "60"}
    return env | ({"PIPELINE_SYNTHETIC_SYMBOLS": symbols} if symbols else {})


def _materialize(env: dict[str, str], *partition_args: str) -> None:
    done = subprocess.run(_command(*partition_args), cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-4000:]


def _snapshot(store: Warehouse) -> dict[str, pl.DataFrame]:
    """Full contents of every table, sorted; quarantine without its ingestion time (it is when, not what)."""
    tables = {t: store.query(f"SELECT * FROM {t}") for t in TABLES}
    tables["quarantine.rejected_rows"] = store.query("SELECT * EXCLUDE (ingested_at) FROM quarantine.rejected_rows")
    return {name: frame.sort(frame.columns) for name, frame in tables.items()}


def _days(store: Warehouse, table: str) -> list[date]:
    return store.query(f"SELECT DISTINCT trading_day FROM {table} ORDER BY 1")["trading_day"].to_list()


@pytest.fixture(scope="module")
def one_day(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, str], Warehouse]:
    env = _env(tmp_path_factory.mktemp("cli"))
    _materialize(env, "--partition", "2024-07-05")
    return env, Warehouse(Path(env["PIPELINE_DATA_LAKE"]) / "warehouse.duckdb")


def test_partition_fills_every_table(one_day) -> None:
    _, store = one_day
    for table in ("raw.trades", "raw.quotes", "raw.option_snapshots", "features.bars_1m", "features.market",
                  "features.options"):
        assert _days(store, table) == [date(2024, 7, 5)], table


def test_rerun_leaves_every_table_identical(one_day) -> None:
    env, store = one_day
    before = _snapshot(store)
    _materialize(env, "--partition", "2024-07-05")
    after = _snapshot(store)
    assert before.keys() == after.keys()
    for name in before:
        assert before[name].equals(after[name]), name


def test_partition_range_is_one_run(tmp_path: Path) -> None:
    env = _env(tmp_path, symbols="SPY")
    _materialize(env, "--partition-range", "2024-07-01...2024-07-09")
    store = Warehouse(Path(env["PIPELINE_DATA_LAKE"]) / "warehouse.duckdb")
    expected = trading_days("2024-07-01", "2024-07-09")
    assert date(2024, 7, 4) not in expected and len(expected) == 6
    for table in ("raw.trades", "features.bars_1m", "features.market"):
        assert _days(store, table) == expected, table
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        (run,) = instance.get_runs()
        assert run.tags["dagster/asset_partition_range_start"] == "2024-07-01"
        assert run.tags["dagster/asset_partition_range_end"] == "2024-07-09"


def test_four_partitions_concurrently(tmp_path: Path) -> None:
    env = _env(tmp_path, symbols="SPY")
    days = ["2024-07-08", "2024-07-09", "2024-07-10", "2024-07-11"]
    # Create the instance's SQLite storage once, as `dagster dev` would: four first-time inits race on migrations.
    dg.DagsterInstance.from_config(env["DAGSTER_HOME"]).dispose()
    processes = [
        subprocess.Popen(
            _command("--partition", day), cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True,
        )
        for day in days
    ]
    errors = [p.communicate(timeout=300)[1] for p in processes]
    for process, stderr in zip(processes, errors, strict=True):
        assert process.returncode == 0, stderr[-4000:]
        assert "Could not set lock" not in stderr
    store = Warehouse(Path(env["PIPELINE_DATA_LAKE"]) / "warehouse.duckdb")
    for table in ("raw.trades", "raw.quotes", "features.bars_1m", "features.market"):
        assert [d.isoformat() for d in _days(store, table)] == days, table
