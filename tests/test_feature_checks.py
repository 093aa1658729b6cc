"""Checks of the feature assets on a real range run of the synthetic market: they pass on clean days (the early
close of 2024-07-03 included, and its nulls within warm-up with no earlier day in the lake), and a problem planted
in the warehouse fails the check that is about it, and only that one, with a message naming what is wrong."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from assets.feature_checks import (
    NO_INFINITE_CHECK,
    NULLS_WITHIN_WARMUP_CHECK,
    SESSION_MINUTES_CHECK,
    build_feature_checks,
)
from assets.features import BARS_1M_KEY, FEATURE_KEYS, MARKET_KEY, OPTIONS_KEY, build_feature_assets
from assets.ingest import build_ingest_assets
from pipeline.contract.calendar import trading_days
from pipeline.features.catalog import MARKET, features_of
from pipeline.features.quality import (
    CONSTANT,
    EMPTY,
    FILLED,
    column_fill,
    consecutive_earlier_sessions,
    null_allowance,
)
from pipeline.lake import Warehouse
from pipeline.partitions import trading_day_partitions
from resources.sources import MarketDataResource
from resources.warehouse import WarehouseResource

FIRST, LAST = "2024-07-03", "2024-07-05"
RANGE_TAGS = {"dagster/asset_partition_range_start": FIRST, "dagster/asset_partition_range_end": LAST}
EXPECTED_CHECKS = {
    dg.AssetCheckKey(BARS_1M_KEY, SESSION_MINUTES_CHECK), dg.AssetCheckKey(BARS_1M_KEY, NO_INFINITE_CHECK),
    dg.AssetCheckKey(MARKET_KEY, SESSION_MINUTES_CHECK), dg.AssetCheckKey(MARKET_KEY, NO_INFINITE_CHECK),
    dg.AssetCheckKey(MARKET_KEY, NULLS_WITHIN_WARMUP_CHECK), dg.AssetCheckKey(OPTIONS_KEY, NO_INFINITE_CHECK),
}


@pytest.fixture(scope="module")
def defs_parts() -> list:
    partitions = trading_day_partitions()
    return [*build_ingest_assets(partitions), *build_feature_assets(partitions), *build_feature_checks()]


def _resources() -> dict:
    return {"warehouse": WarehouseResource(), "market_data": MarketDataResource(snapshot_minutes=60)}


@pytest.fixture(scope="module")
def range_run(defs_parts, module_lake_env: dict[str, str]) -> dg.ExecuteInProcessResult:
    return dg.materialize(defs_parts, resources=_resources(), tags=RANGE_TAGS)


@pytest.fixture(scope="module")
def lake(range_run, module_lake_env: dict[str, str]) -> Path:
    return Path(module_lake_env["PIPELINE_DATA_LAKE"])


@pytest.fixture
def store(lake: Path) -> Iterator[Warehouse]:
    """The warehouse of the range run; whatever a test plants in it is undone afterwards."""
    database = lake / "warehouse.duckdb"
    backup = lake / "warehouse.clean.duckdb"
    shutil.copy(database, backup)
    yield Warehouse(database)
    shutil.copy(backup, database)


def _evaluations(result: dg.ExecuteInProcessResult) -> dict[dg.AssetCheckKey, dg.AssetCheckEvaluation]:
    return {e.asset_check_key: e for e in result.get_asset_check_evaluations()}


def _run_checks(defs_parts, day: str) -> dict[dg.AssetCheckKey, dg.AssetCheckEvaluation]:
    """Every feature check alone, on one partition, as the UI's "execute checks" for a partition does."""
    result = dg.materialize(
        defs_parts, resources=_resources(), selection=dg.AssetSelection.checks_for_assets(*FEATURE_KEYS),
        tags={"dagster/partition": day}, raise_on_error=False,
    )
    return _evaluations(result)


def _only_failure(defs_parts, key: dg.AssetCheckKey) -> dg.AssetCheckEvaluation:
    """The evaluation of `key` after running every check on LAST, which must be the one that failed."""
    evaluations = _run_checks(defs_parts, LAST)
    assert {k for k, e in evaluations.items() if not e.passed} == {key}
    return evaluations[key]


def _plant(store: Warehouse, sql: str) -> None:
    """Run `sql` with every `?` bound to the day LAST."""
    store.execute(sql, [date.fromisoformat(LAST)] * sql.count("?"))


def test_every_check_passes_on_the_clean_range(range_run) -> None:
    assert range_run.success
    evaluations = _evaluations(range_run)
    assert EXPECTED_CHECKS <= set(evaluations)
    for key in EXPECTED_CHECKS:
        evaluation = evaluations[key]
        assert evaluation.passed, (key, evaluation.description)
        # One evaluation covers every trading day of the range run.
        assert evaluation.metadata["trading_days"].value == [d.isoformat() for d in trading_days(FIRST, LAST)]
    minutes = evaluations[dg.AssetCheckKey(BARS_1M_KEY, SESSION_MINUTES_CHECK)].metadata
    assert minutes["symbol_days_checked"].value == 4  # two symbols on two days


def test_first_day_nulls_are_within_warmup_and_the_next_day_has_none(range_run, lake: Path) -> None:
    """The clean pass above is not vacuous: day one has warm-up nulls, the day after (with history) fewer."""
    frame = Warehouse(lake / "warehouse.duckdb").read_partition("features.market", trading_days(FIRST, LAST))
    nulls = frame.group_by("trading_day").agg(pl.col("rsi_14", "log_return_1d").null_count()).sort("trading_day")
    assert nulls["rsi_14"].to_list() == [2 * 14, 0]  # 14 warm-up bars per symbol, then the previous day's bars
    assert nulls["log_return_1d"].to_list() == [2 * 210, 0]  # no earlier close on day one: null all day


def test_checks_pass_when_run_alone_on_a_partition(defs_parts, store: Warehouse) -> None:
    evaluations = _run_checks(defs_parts, LAST)
    assert set(evaluations) == EXPECTED_CHECKS
    assert all(e.passed for e in evaluations.values())


def test_a_missing_minute_fails_session_minutes(defs_parts, store: Warehouse) -> None:
    _plant(store, "DELETE FROM features.bars_1m WHERE symbol = 'SPY' AND trading_day = ? "
                  "AND ts = (SELECT min(ts) + INTERVAL 100 MINUTE FROM features.bars_1m WHERE trading_day = ?)")
    evaluation = _only_failure(defs_parts, dg.AssetCheckKey(BARS_1M_KEY, SESSION_MINUTES_CHECK))
    assert evaluation.metadata["missing_minutes"].value == 1
    assert "SPY" in evaluation.description and LAST in evaluation.description
    assert "389 of 390" in evaluation.description


def test_an_infinite_value_fails_no_infinite_values(defs_parts, store: Warehouse) -> None:
    _plant(store, "UPDATE features.market SET realized_vol_15m = 'inf'::DOUBLE WHERE symbol = 'QQQ' "
                  "AND trading_day = ? AND ts = (SELECT max(ts) FROM features.market WHERE trading_day = ?)")
    evaluation = _only_failure(defs_parts, dg.AssetCheckKey(MARKET_KEY, NO_INFINITE_CHECK))
    assert evaluation.metadata["infinite_by_column"].value == {"realized_vol_15m": 1}
    assert "realized_vol_15m (1)" in evaluation.description


def test_a_feature_null_beyond_its_warmup_fails_nulls_within_warmup(defs_parts, store: Warehouse) -> None:
    _plant(store, "UPDATE features.market SET macd = NULL WHERE trading_day = ?")
    evaluation = _only_failure(defs_parts, dg.AssetCheckKey(MARKET_KEY, NULLS_WITHIN_WARMUP_CHECK))
    assert evaluation.metadata["features_failing"].value == ["macd"]
    assert evaluation.metadata["symbol_day_features_failing"].value == 2  # both symbols
    assert "macd" in evaluation.description and "390 of 390 rows null, 0 allowed" in evaluation.description


def test_the_same_nulls_on_a_first_day_are_within_warmup() -> None:
    """The allowance follows the catalog: a 26-bar MACD may be null for its 25 warm-up bars without history,
    never with it; a 5-day return all day until 5 earlier sessions exist; turbulence_index every morning."""
    by_name = {f.name: f for f in features_of(MARKET)}
    assert null_allowance(by_name["macd"], 390, earlier_sessions=0, earlier_minute_sessions=0) == 25
    assert null_allowance(by_name["macd"], 390, earlier_sessions=1, earlier_minute_sessions=1) == 0
    assert null_allowance(by_name["log_return_5d"], 390, earlier_sessions=4, earlier_minute_sessions=4) == 390
    assert null_allowance(by_name["log_return_5d"], 390, earlier_sessions=5, earlier_minute_sessions=5) == 0
    assert null_allowance(by_name["turbulence_index"], 390, earlier_sessions=9, earlier_minute_sessions=9) == 61
    assert null_allowance(by_name["session_return"], 390, earlier_sessions=0, earlier_minute_sessions=0) == 0


def test_earlier_sessions_count_back_to_the_first_gap() -> None:
    days = [date(2024, 7, 1), date(2024, 7, 2), date(2024, 7, 3)]
    held = pl.DataFrame({"symbol": ["SPY", "SPY", "QQQ"], "trading_day": [days[0], days[2], days[0]]})
    counts = consecutive_earlier_sessions([date(2024, 7, 5)], {date(2024, 7, 5): days}, held)
    assert counts == {(date(2024, 7, 5), "SPY"): 1, (date(2024, 7, 5), "QQQ"): 0}


def test_a_column_that_never_changes_within_a_symbol_is_constant_not_filled() -> None:
    # Two daily-bar symbols: session_return is 0.0 on every row (a session is one bar), a flag is 1 for one symbol
    # and 0 for the other, a minute window is null, a daily return changes.
    frame = pl.DataFrame({
        "symbol": ["IDX", "IDX", "IDX", "STK", "STK", "STK"],
        "session_return": [0.0] * 6,
        "listed": [1, 1, None, 0, 0, 0],
        "log_return_1m": pl.Series([None] * 6, dtype=pl.Float64),
        "log_return_1d": [None, 0.01, -0.02, None, 0.03, 0.03],
    })
    columns = ["session_return", "listed", "log_return_1m", "log_return_1d"]
    assert column_fill(frame, columns) == {"session_return": CONSTANT, "listed": CONSTANT, "log_return_1m": EMPTY,
                                           "log_return_1d": FILLED}
    assert column_fill(frame.clear(), columns) == dict.fromkeys(columns, EMPTY)
