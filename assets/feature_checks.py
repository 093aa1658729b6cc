"""Asset checks of the feature tables, read back from the warehouse after each run:

- `session_minutes` (features.bars_1m, and the one-minute rows of features.market): every minute of the session,
  early closes included, once per symbol and day. Blocking: a model must not train on a day with holes.
- `no_infinite_values` (every features table): no +-inf in any float column. Blocking.
- `nulls_within_warmup` (features.market): no feature null more often than its warm-up explains (the allowance
  per feature is in `pipeline.features.quality`); not blocking, since the first days of a new symbol are
  expected to trip the daily windows only within the allowance, and anything else is for a person to look at.

Ranges: a check evaluates every trading day of its run (a single-run range backfill included) and reports per
day and symbol what failed. A check launched on its own from the UI, outside a partitioned run, checks the latest
trading day in the table.
"""

from collections.abc import Callable, Sequence
from datetime import date

import dagster as dg
import polars as pl

from assets.features import BARS_1M_KEY, FEATURE_KEYS, MARKET_KEY
from assets.metadata import preview_markdown
from pipeline.contract.calendar import earlier_trading_days, trading_days, trading_session
from pipeline.features import LOOKBACK_TRADING_DAYS
from pipeline.features.quality import (
    MINUTE_INTERVAL,
    consecutive_earlier_sessions,
    excess_nulls,
    infinite_counts,
    missing_minutes,
)
from pipeline.lake import Warehouse
from resources.warehouse import WarehouseResource

SESSION_MINUTES_CHECK = "session_minutes"
NO_INFINITE_CHECK = "no_infinite_values"
NULLS_WITHIN_WARMUP_CHECK = "nulls_within_warmup"
# How many offending rows a check lists in its metadata (the counts always cover all of them).
LISTED = 50
# Run tags of a partition and of a range: a run of checks alone carries them with no partitioned asset to read
# its partition keys from.
_PARTITION_TAG = "dagster/partition"
_RANGE_TAGS = ("dagster/asset_partition_range_start", "dagster/asset_partition_range_end")


def _table(key: dg.AssetKey) -> str:
    return ".".join(key.path)


def check_days(context: dg.AssetCheckExecutionContext, store: Warehouse, table: str) -> list[date]:
    """The trading days this evaluation covers: the run's partitions, else the latest day in the table."""
    op_context = context.op_execution_context
    if op_context.has_partition_key or op_context.has_partition_key_range:
        try:
            return [date.fromisoformat(key) for key in op_context.partition_keys]
        except dg.DagsterInvariantViolationError:
            tags = context.run.tags
            if _PARTITION_TAG in tags:
                return [date.fromisoformat(tags[_PARTITION_TAG])]
            return trading_days(*(tags[tag] for tag in _RANGE_TAGS))
    latest = store.query(f"SELECT max(trading_day) AS day FROM {table}")["day"][0] if store.table_exists(table) else None
    return [latest] if latest else []


def _days_text(days: Sequence[date]) -> str:
    return f"{days[0]}...{days[-1]}" if len(days) > 1 else str(days[0]) if days else "no day"


def _check_result(
    key: dg.AssetKey, name: str, days: list[date], failing: pl.DataFrame, metadata: dict,
    describe: Callable[[], str],
) -> dg.AssetCheckResult:
    """Passes when `failing` has no rows; else lists its first rows in the metadata and says `describe()`."""
    passed = failing.is_empty()
    metadata = {"trading_days": [d.isoformat() for d in days], **metadata}
    if not passed:
        metadata["failing"] = dg.MetadataValue.md(preview_markdown(failing, LISTED))
    return dg.AssetCheckResult(
        asset_key=key, check_name=name, passed=passed, metadata=metadata, description=None if passed else describe()
    )


def session_minutes_result(key: dg.AssetKey, store: Warehouse, days: list[date]) -> dg.AssetCheckResult:
    """Every session minute present once per symbol and day (one-minute rows only in features.market)."""
    table = _table(key)
    columns = None if key == BARS_1M_KEY else ["symbol", "ts", "trading_day", "bar_interval"]
    day_gaps, checked = [], 0
    for day in days:  # one day in memory at a time, however long the range
        frame = store.read_partition(table, [day], columns)
        if "bar_interval" in frame.columns:
            frame = frame.filter(pl.col("bar_interval") == MINUTE_INTERVAL)
        day_gaps.append(missing_minutes(frame.select("symbol", "ts", "trading_day"), [trading_session(day)]))
        checked += frame.select("symbol", "trading_day").unique().height
    gaps = pl.concat(day_gaps, how="vertical_relaxed")

    def describe() -> str:
        worst = gaps.row(0, named=True)
        return (
            f"{table} {_days_text(days)}: {gaps.height} symbol-day(s) do not hold every session minute once "
            f"(e.g. {worst['symbol']} on {worst['trading_day']}: {worst['present']} of {worst['expected']} minutes, "
            f"{worst['missing']} missing from {worst['first_missing']}, {worst['duplicated']} duplicated); "
            f"re-materialize {table} for those days, and check the raw trades/quotes if it persists"
        )

    return _check_result(key, SESSION_MINUTES_CHECK, days, gaps, {
        "symbol_days_checked": checked,
        "symbol_days_failing": gaps.height,
        "missing_minutes": int(gaps["missing"].sum()),
        "duplicated_minutes": int(gaps["duplicated"].sum()),
    }, describe)


def no_infinite_result(key: dg.AssetKey, store: Warehouse, days: list[date]) -> dg.AssetCheckResult:
    """No +-inf in any float column of the days' rows."""
    table = _table(key)
    failing = pl.DataFrame(
        [{"trading_day": day, "column": column, "infinite": n}
         for day in days for column, n in infinite_counts(store.read_partition(table, [day])).items()],
        schema={"trading_day": pl.Date, "column": pl.Utf8, "infinite": pl.Int64},
    )
    by_column = dict(failing.group_by("column").agg(pl.col("infinite").sum()).sort("column").iter_rows())

    def describe() -> str:
        return (
            f"{table} {_days_text(days)}: +-inf in {len(by_column)} column(s): "
            + ", ".join(f"{c} ({n})" for c, n in by_column.items())
            + "; the feature code should turn a non-finite value into null, so look at the formula of these columns"
        )

    return _check_result(key, NO_INFINITE_CHECK, days, failing, {
        "infinite_values": int(failing["infinite"].sum()),
        "infinite_by_column": dg.MetadataValue.json(by_column),
    }, describe)


def _held(store: Warehouse, table: str, days: Sequence[date]) -> pl.DataFrame:
    """(symbol, trading_day) pairs `table` holds on `days`."""
    if not days or not store.table_exists(table):
        return pl.DataFrame(schema={"symbol": pl.Utf8, "trading_day": pl.Date})
    return store.query(
        f"SELECT DISTINCT symbol, trading_day FROM {table} WHERE list_contains(?::DATE[], trading_day)", [list(days)]
    )


def nulls_within_warmup_result(store: Warehouse, days: list[date]) -> dg.AssetCheckResult:
    """No feature of features.market null beyond its warm-up (see `pipeline.features.quality`)."""
    table = _table(MARKET_KEY)
    earlier = {day: earlier_trading_days(day, LOOKBACK_TRADING_DAYS) for day in days}
    every_earlier = sorted({d for previous in earlier.values() for d in previous})
    minute_days = _held(store, _table(BARS_1M_KEY), every_earlier)
    with_close = pl.concat([minute_days, _held(store, "raw.bars", every_earlier)]).unique()
    closes = consecutive_earlier_sessions(days, earlier, with_close)
    minutes = consecutive_earlier_sessions(days, earlier, minute_days)
    # One day's rows in memory at a time, however long the range.
    excess = [e for day in days for e in excess_nulls(store.read_partition(table, [day]), closes, minutes)]
    columns = sorted({e.column for e in excess})
    failing = pl.DataFrame([e.__dict__ for e in excess]) if excess else pl.DataFrame()

    def describe() -> str:
        first = excess[0]
        return (
            f"{table} {_days_text(days)}: {len(columns)} feature(s) null beyond their warm-up: {', '.join(columns)} "
            f"(e.g. {first.column} of {first.symbol} on {first.trading_day}: {first.nulls} of {first.rows} rows "
            f"null, {first.allowed} allowed)"
        )

    return _check_result(MARKET_KEY, NULLS_WITHIN_WARMUP_CHECK, days, failing, {
        "features_failing": columns,
        "symbol_day_features_failing": len(excess),
    }, describe)


def _checks_of(key: dg.AssetKey) -> list[dg.AssetChecksDefinition]:
    table = _table(key)

    @dg.asset_check(
        asset=key,
        name=NO_INFINITE_CHECK,
        blocking=True,
        description=f"No +-inf in any float column of {table} for the run's trading days.",
    )
    def _no_infinite(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource) -> dg.AssetCheckResult:
        store = warehouse.warehouse()
        return no_infinite_result(key, store, check_days(context, store, table))

    if key not in (BARS_1M_KEY, MARKET_KEY):
        return [_no_infinite]

    @dg.asset_check(
        asset=key,
        name=SESSION_MINUTES_CHECK,
        blocking=True,
        description=f"Every minute of the session (early closes: the calendar's shorter session) is in {table} "
        "once per symbol and trading day" + (" (one-minute rows; bar-only symbols are not held to it)."
                                             if key == MARKET_KEY else "."),
    )
    def _session_minutes(
        context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource
    ) -> dg.AssetCheckResult:
        store = warehouse.warehouse()
        return session_minutes_result(key, store, check_days(context, store, table))

    return [_no_infinite, _session_minutes]


@dg.asset_check(
    asset=MARKET_KEY,
    name=NULLS_WITHIN_WARMUP_CHECK,
    description="No feature of the one-minute rows is null more often than its window's warm-up explains: daily "
    "windows may be null all day until the symbol has `warm-up` earlier sessions; minute and bar windows for their "
    "first warm-up rows when the session before is missing (turbulence_index every day: it restarts at the open); "
    "everything else never. See pipeline/features/quality.py and docs/FEATURES.md for each feature's window.",
)
def nulls_within_warmup(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource) -> dg.AssetCheckResult:
    store = warehouse.warehouse()
    return nulls_within_warmup_result(store, check_days(context, store, _table(MARKET_KEY)))


def build_feature_checks() -> list[dg.AssetChecksDefinition]:
    """Every check of the feature assets."""
    return [*(check for key in FEATURE_KEYS for check in _checks_of(key)), nulls_within_warmup]
