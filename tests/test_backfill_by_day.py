"""A single-run range backfill of ingest + features works one trading day at a time: each day is fetched (or read),
written in its own transaction and only then is the next day touched, so the run holds one day's rows whatever the
range; and its results equal day-by-day runs."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from conftest import DATA_GROUPS, assets_in_groups
from polars.testing import assert_frame_equal

from pipeline.contract.calendar import TradingSession, trading_days
from pipeline.lake import Warehouse
from pipeline.sources.base import MarketSource
from resources.sources import MarketDataResource
from resources.warehouse import WarehouseResource

DAYS = trading_days("2024-07-03", "2024-07-09")  # an early close, a holiday, then full sessions
TABLES = ("raw.trades", "raw.quotes", "raw.option_snapshots", "features.bars_1m", "features.market",
          "features.options")
# The table each features table reads its day's rows from (features.market also reads that table's earlier days).
FEATURE_INPUTS = {"features.bars_1m": "raw.trades", "features.market": "features.bars_1m",
                  "features.options": "raw.option_snapshots"}
# (what, table, days) in the order the run did it: "fetch" from the source, "read" or "write" of partitions.
EVENTS: list[tuple[str, str, tuple[date, ...]]] = []


class _RecordingSource:
    """Passes fetches through to the real source and records which days each one asked for."""

    def __init__(self, source: MarketSource) -> None:
        self.source, self.name = source, source.name

    def fetch(self, table: str, session: TradingSession, symbols: Sequence[str]) -> pl.DataFrame:
        EVENTS.append(("fetch", f"raw.{table}", (session.trading_day,)))
        return self.source.fetch(table, session, symbols)


class RecordingMarketData(MarketDataResource):
    def build_source(self, lake_dir: Path) -> MarketSource:
        return _RecordingSource(super().build_source(lake_dir))


def _materialize(lake: Path, market_data: MarketDataResource, **kwargs: object) -> None:
    resources = {"warehouse": WarehouseResource(lake_path=str(lake)), "market_data": market_data}
    assert dg.materialize(assets_in_groups(*DATA_GROUPS), resources=resources, **kwargs).success


def _rows(lake: Path, table: str) -> pl.DataFrame:
    frame = Warehouse(lake / "warehouse.duckdb").query(f"SELECT * FROM {table}")
    return frame.sort(frame.columns)


@pytest.fixture(scope="module")
def lakes(module_lake_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """One lake filled by a range run (recorded), one by single-day runs, oldest day first."""
    ranged, daily = tmp_path_factory.mktemp("ranged"), tmp_path_factory.mktemp("daily")
    original_write, original_read = Warehouse.write_partition, Warehouse.read_partition

    def recording_write(self: Warehouse, table: str, trading_days: Sequence[date], *args, **kwargs):
        EVENTS.append(("write", table, tuple(sorted(set(trading_days)))))
        return original_write(self, table, trading_days, *args, **kwargs)

    def recording_read(self: Warehouse, table: str, trading_days: Sequence[date], *args, **kwargs):
        EVENTS.append(("read", table, tuple(sorted(set(trading_days)))))
        return original_read(self, table, trading_days, *args, **kwargs)

    tags = {"dagster/asset_partition_range_start": DAYS[0].isoformat(),
            "dagster/asset_partition_range_end": DAYS[-1].isoformat()}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Warehouse, "write_partition", recording_write)
        mp.setattr(Warehouse, "read_partition", recording_read)
        _materialize(ranged, RecordingMarketData(snapshot_minutes=120), tags=tags)
    for day in DAYS:
        _materialize(daily, MarketDataResource(snapshot_minutes=120), partition_key=day.isoformat())
    return ranged, daily


@pytest.mark.parametrize("table", TABLES)
def test_a_range_run_equals_single_day_runs(lakes: tuple[Path, Path], table: str) -> None:
    ranged, daily = lakes
    expected = _rows(daily, table)
    assert set(expected["trading_day"]) == set(DAYS)
    assert_frame_equal(_rows(ranged, table), expected)


def test_each_partition_is_its_own_transaction(lakes: tuple[Path, Path]) -> None:
    writes = [(table, days) for what, table, days in EVENTS if what == "write"]
    for table in TABLES:
        assert [days for t, days in writes if t == table] == [(day,) for day in DAYS], table


@pytest.mark.parametrize("table", ["raw.trades", "raw.quotes", "raw.option_snapshots"])
def test_ingest_writes_a_day_before_it_fetches_the_next(lakes: tuple[Path, Path], table: str) -> None:
    # Fetch, write, fetch, write...: a run that fetched the range first and wrote it after would hold it all.
    steps = [(what, days) for what, t, days in EVENTS if t == table and what != "read"]
    assert steps == [(what, (day,)) for day in DAYS for what in ("fetch", "write")]


@pytest.mark.parametrize("table", sorted(FEATURE_INPUTS))
def test_features_write_a_day_before_they_read_the_next(lakes: tuple[Path, Path], table: str) -> None:
    # Before each write of a day, the newest input day read since the previous write is that day: a run that read
    # the whole range first would have read the last day before its first write.
    newest_read_per_write, newest = [], None
    for what, t, days in EVENTS:
        if what == "read" and t == FEATURE_INPUTS[table]:
            newest = max(days) if newest is None else max(newest, *days)
        elif what == "write" and t == table:
            newest_read_per_write.append((days, newest))
            newest = None
    assert newest_read_per_write == [((day,), day) for day in DAYS]
