"""Ingest and feature assets materialized with dg.materialize on a temp lake: tables, metadata, checks."""

from __future__ import annotations

from datetime import date

import dagster as dg
import pytest
from conftest import DATA_GROUPS, assets_in_groups, materialized_metadata

from pipeline.contract.schemas import RAW_COLUMNS, RAW_TABLES
from pipeline.lake import Warehouse
from resources.sources import MarketDataResource
from resources.warehouse import WarehouseResource

DAY = "2024-07-05"
SNAPSHOT_MINUTES = 60


@pytest.fixture(scope="module")
def assets() -> list[dg.AssetsDefinition]:
    return assets_in_groups(*DATA_GROUPS)


@pytest.fixture(scope="module")
def synthetic_run(module_lake_env: dict[str, str], assets) -> dg.ExecuteInProcessResult:
    # Hourly option snapshots keep the chain small; the features' content is tested in the core.
    resources = {"warehouse": WarehouseResource(), "market_data": MarketDataResource(snapshot_minutes=SNAPSHOT_MINUTES)}
    return dg.materialize(assets, resources=resources, partition_key=DAY)


@pytest.fixture(scope="module")
def store(synthetic_run: dg.ExecuteInProcessResult, module_lake_env: dict[str, str]) -> Warehouse:
    return Warehouse(f"{module_lake_env['PIPELINE_DATA_LAKE']}/warehouse.duckdb")


def test_every_asset_materialized(synthetic_run: dg.ExecuteInProcessResult) -> None:
    assert synthetic_run.success
    keys = {event.asset_key for event in synthetic_run.get_asset_materialization_events()}
    assert {key.path[0] for key in keys} == {"raw", "features"}
    assert len(keys) == 7


@pytest.mark.parametrize("table", RAW_TABLES)
def test_raw_metadata_accounts_for_every_row(
    synthetic_run: dg.ExecuteInProcessResult, store: Warehouse, table: str
) -> None:
    meta = materialized_metadata(synthetic_run, f"raw__{table}")
    assert meta["rows_read"] == meta["rows_accepted"] + meta["rows_rejected"]
    assert sum(meta["rejected_by_reason"].values()) == meta["rows_rejected"]
    assert meta["dagster/row_count"] == store.row_count(f"raw.{table}") == meta["rows_accepted"]
    assert [c.name for c in meta["dagster/column_schema"].columns] == list(RAW_COLUMNS[table])
    assert meta["first_trading_day"] == meta["last_trading_day"] == DAY
    assert meta["preview"].startswith("| " + " | ".join(RAW_COLUMNS[table]))


def test_checks_passed(synthetic_run: dg.ExecuteInProcessResult) -> None:
    evaluations = synthetic_run.get_asset_check_evaluations()
    assert {e.asset_key.path[1] for e in evaluations} == set(RAW_TABLES)
    assert all(e.passed for e in evaluations)


def test_tables_hold_the_day(store: Warehouse) -> None:
    day = date.fromisoformat(DAY)
    for table in ("raw.trades", "raw.quotes", "raw.option_snapshots", "features.bars_1m", "features.market"):
        days = store.query(f"SELECT DISTINCT trading_day FROM {table}")["trading_day"].to_list()
        assert days == [day], table
    symbols = store.query("SELECT DISTINCT symbol FROM features.bars_1m ORDER BY symbol")["symbol"].to_list()
    assert symbols == ["QQQ", "SPY"]
    # A full regular session: one bar per minute per symbol.
    assert store.row_count("features.bars_1m") == 2 * 390
    # One features.options row per underlying per snapshot: hourly snapshots from open + 60 min to the close
    # (390 minutes) are at minutes 60, 120, ..., 360, so 6 a day, for each of the two underlyings.
    snapshots = len(range(SNAPSHOT_MINUTES, 390 + 1, SNAPSHOT_MINUTES))
    assert snapshots == 6
    assert store.row_count("features.options") == 2 * snapshots
    per_underlying = store.query("SELECT underlying, count(DISTINCT ts) AS n FROM features.options "
                                 "GROUP BY underlying ORDER BY underlying")
    assert per_underlying["underlying"].to_list() == ["QQQ", "SPY"]
    assert per_underlying["n"].to_list() == [snapshots, snapshots]


def test_featurematerialized_metadata(synthetic_run: dg.ExecuteInProcessResult, store: Warehouse) -> None:
    bars = materialized_metadata(synthetic_run, "features__bars_1m")
    trades, quotes = materialized_metadata(synthetic_run, "raw__trades"), materialized_metadata(synthetic_run, "raw__quotes")
    assert bars["rows_read"] == trades["rows_accepted"] + quotes["rows_accepted"]
    assert bars["rows_written"] == bars["dagster/row_count"] == 2 * 390
    assert bars["symbols"] == 2
    market = materialized_metadata(synthetic_run, "features__market")
    assert market["dagster/row_count"] == store.row_count("features.market")
    assert "symbol" in [c.name for c in market["dagster/column_schema"].columns]
