"""A single-run range backfill that fails on a later day still records the days it wrote before: each committed day
is a materialization of its own partition, with its metadata, so the UI shows what is in the lake; the failed day
and the days after it show none (and hold no rows). Ingest and features alike, as real Dagster runs."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from conftest import assets_in_groups

from assets import features
from assets.features import OPTIONS_KEY
from assets.ingest import raw_asset_key
from pipeline.contract.calendar import TradingSession, trading_days
from pipeline.lake import Warehouse
from pipeline.sources.base import MarketSource, SourceUnavailableError
from resources.sources import MarketDataResource
from resources.warehouse import WarehouseResource

DAYS = trading_days("2024-07-08", "2024-07-11")
FAILING = DAYS[2]  # the third day of four
RANGE = {"dagster/asset_partition_range_start": DAYS[0].isoformat(),
         "dagster/asset_partition_range_end": DAYS[-1].isoformat()}
SNAPSHOTS_KEY = raw_asset_key("option_snapshots")


class _DownOnOneDay:
    """The real source, except that the broker is down for FAILING."""

    def __init__(self, source: MarketSource) -> None:
        self.source, self.name = source, source.name

    def fetch(self, table: str, session: TradingSession, symbols: Sequence[str]) -> pl.DataFrame:
        if session.trading_day == FAILING:
            raise SourceUnavailableError(f"broker down on {FAILING} (test)")
        return self.source.fetch(table, session, symbols)


class DownOnOneDay(MarketDataResource):
    def build_source(self, lake_dir: Path) -> MarketSource:
        return _DownOnOneDay(super().build_source(lake_dir))


def _run(assets: list, key: dg.AssetKey, market_data: MarketDataResource) -> tuple[dg.ExecuteInProcessResult,
                                                                                     dg.DagsterInstance]:
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(assets, selection=[key], tags=RANGE, instance=instance, raise_on_error=False,
                            resources={"warehouse": WarehouseResource(), "market_data": market_data})
    return result, instance


def _days_with_rows(lake_env: dict[str, str], table: str) -> list[date]:
    store = Warehouse(Path(lake_env["PIPELINE_DATA_LAKE"]) / "warehouse.duckdb")
    return store.query(f"SELECT DISTINCT trading_day FROM {table} ORDER BY trading_day")["trading_day"].to_list()


def _assert_recorded(instance: dg.DagsterInstance, key: dg.AssetKey, table_days: list[date]) -> None:
    committed = [d.isoformat() for d in DAYS[:2]]
    assert sorted(instance.get_materialized_partitions(key)) == committed
    for day in committed:
        (record,) = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, asset_partitions=[day]), limit=10).records
        metadata = record.asset_materialization.metadata
        assert metadata["first_trading_day"].value == day
        assert metadata["committed_before_failure_on"].value == FAILING.isoformat()
    assert table_days == DAYS[:2]  # what the events say is what the lake holds


def test_a_failed_ingest_range_records_the_days_it_committed(lake_env: dict[str, str]) -> None:
    result, instance = _run(assets_in_groups("ingest"), SNAPSHOTS_KEY, DownOnOneDay(snapshot_minutes=390))
    assert not result.success
    (failure,) = result.get_step_failure_events()
    assert f"broker down on {FAILING}" in failure.step_failure_data.error.to_string()
    _assert_recorded(instance, SNAPSHOTS_KEY, _days_with_rows(lake_env, "raw.option_snapshots"))
    (record,) = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=SNAPSHOTS_KEY, asset_partitions=[DAYS[0].isoformat()]), limit=10).records
    assert record.asset_materialization.metadata["rows_accepted"].value > 0


def test_a_failed_features_range_records_the_days_it_committed(lake_env: dict[str, str],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    ingested, instance = _run(assets_in_groups("ingest"), SNAPSHOTS_KEY, MarketDataResource(snapshot_minutes=390))
    assert ingested.success and _days_with_rows(lake_env, "raw.option_snapshots") == DAYS
    for day in DAYS:  # a range run that succeeds records each day once, with that day's own metadata
        (record,) = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=SNAPSHOTS_KEY, asset_partitions=[day.isoformat()]), limit=10).records
        metadata = record.asset_materialization.metadata
        assert metadata["first_trading_day"].value == day.isoformat() and "committed_before_failure_on" not in metadata
    build_day = features._options_day

    def failing_on_one_day(store: Warehouse, day: date) -> tuple[pl.DataFrame, int]:
        if day == FAILING:
            raise RuntimeError(f"features of {day} failed (test)")
        return build_day(store, day)

    monkeypatch.setattr(features, "_options_day", failing_on_one_day)
    result, instance = _run(assets_in_groups("features"), OPTIONS_KEY, MarketDataResource())
    assert not result.success
    _assert_recorded(instance, OPTIONS_KEY, _days_with_rows(lake_env, "features.options"))
