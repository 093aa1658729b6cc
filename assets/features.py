"""Feature assets: read the raw partitions of each trading day, call the framework-free feature code, write
`features.bars_1m`, `features.market` and `features.options` (one transaction per day, like the raw tables).

A run over a range computes and writes one day at a time, as a single-day run of that day would, so it holds one
day's rows whatever the range and a range backfill equals day-by-day runs. If a day fails, the days written
before it are recorded as materialized (`commit_days`). `features.market` of day D also reads
the LOOKBACK_TRADING_DAYS sessions before D from the warehouse (its windows reach back; the partition mapping says
so), and writes only D's rows.
"""

from collections.abc import Callable
from datetime import date

import dagster as dg
import polars as pl

from assets.ingest import raw_asset_key
from assets.metadata import (
    Metadata,
    RunColumns,
    commit_days,
    feature_column_descriptions,
    feature_table_schema,
    partition_days,
    partition_metadata,
    run_metadata,
)
from pipeline.contract.calendar import earlier_trading_days, trading_session
from pipeline.features import LOOKBACK_TRADING_DAYS, bars_1m, options_features
from pipeline.features.lookback import row_lookback_sessions
from pipeline.features.model_features import market_features_days
from pipeline.lake import Warehouse
from resources.warehouse import WarehouseResource

FEATURES_GROUP = "features"
BARS_1M_KEY = dg.AssetKey(["features", "bars_1m"])
MARKET_KEY = dg.AssetKey(["features", "market"])
OPTIONS_KEY = dg.AssetKey(["features", "options"])
FEATURE_KEYS = (BARS_1M_KEY, MARKET_KEY, OPTIONS_KEY)

# One trading day of a features table from what the warehouse holds: (rows out, input rows read).
DayBuilder = Callable[[Warehouse, date], tuple[pl.DataFrame, int]]
# The columns of the older lookback days of features.bars_1m: only their daily closes are read.
_CLOSE_COLUMNS = ["symbol", "ts", "trading_day", "close"]


def _bars_1m_day(store: Warehouse, day: date) -> tuple[pl.DataFrame, int]:
    trades = store.read_partition("raw.trades", [day])
    quotes = store.read_partition("raw.quotes", [day])
    return bars_1m(trades, quotes, trading_session(day)), trades.height + quotes.height


def _market_day(store: Warehouse, day: date) -> tuple[pl.DataFrame, int]:
    # Bar-only symbols get rows from raw.bars, whose ts is the bar's start (Alpaca, IBKR, most files).
    lookback = earlier_trading_days(day, LOOKBACK_TRADING_DAYS)
    every_day = [*lookback, day]
    # Minute windows need every column of the last sessions only; older ones give their daily closes.
    full_from = max(0, len(lookback) - row_lookback_sessions(1))
    minute_bars = store.read_partition("features.bars_1m", every_day[full_from:])
    if full_from:
        older = store.read_partition("features.bars_1m", every_day[:full_from], _CLOSE_COLUMNS)
        minute_bars = pl.concat([older, minute_bars], how="diagonal_relaxed")
    raw_bars = store.read_partition("raw.bars", every_day)
    sessions = [trading_session(d) for d in every_day]
    features = market_features_days(sessions, minute_bars, raw_bars, bar_ts="start", targets=1)
    # The day reads its own rows and its lookback's.
    return features, minute_bars.height + raw_bars.height


def _options_day(store: Warehouse, day: date) -> tuple[pl.DataFrame, int]:
    snapshots = store.read_partition("raw.option_snapshots", [day])
    return options_features(snapshots), snapshots.height


def _build_feature_asset(
    key: dg.AssetKey,
    deps: list[dg.AssetKey | dg.AssetDep],
    build_day: DayBuilder,
    description: str,
    partitions_def: dg.PartitionsDefinition,
    lookback_trading_days: int = 0,
) -> dg.AssetsDefinition:
    table = ".".join(key.path)

    @dg.asset(
        key=key,
        deps=deps,
        description=description,
        group_name=FEATURES_GROUP,
        kinds={"duckdb", "polars"},
        partitions_def=partitions_def,
        backfill_policy=dg.BackfillPolicy.single_run(),
        pool="duckdb",
        metadata={"dagster/column_schema": feature_table_schema(table)},
    )
    def _features(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
        days = partition_days(context)
        store = warehouse.warehouse()
        columns = RunColumns()

        def write(day: date) -> tuple[tuple[int, int], Metadata]:
            """Build and write one day (one transaction); its rows are freed on return."""
            frame, rows_read = build_day(store, day)
            store.write_partition(table, [day], frame)
            columns.see(frame)
            return (frame.height, _symbol_count(frame)), {
                **partition_metadata(day, frame, store.row_count(table, [day])),
                "symbols": _symbol_count(frame),
                "rows_read": rows_read,
            }

        written = commit_days(context, days, write)
        rows, symbols = sum(n for n, _ in written), max(s for _, s in written)
        context.log.info(f"{table}: {rows} rows for up to {symbols} symbol(s) a day over {len(days)} trading day(s)")
        return dg.MaterializeResult(
            metadata={
                **run_metadata(days, columns.frame, feature_column_descriptions(table)),
                "lookback_trading_days": lookback_trading_days,
            }
        )

    return _features


def _symbol_count(frame: pl.DataFrame) -> int:
    return frame["symbol" if "symbol" in frame.columns else "underlying"].n_unique() if frame.height else 0


def _with_lookback(key: dg.AssetKey) -> dg.AssetDep:
    """Day D depends on D and the LOOKBACK_TRADING_DAYS partitions before it (those before the first are fine)."""
    mapping = dg.TimeWindowPartitionMapping(
        start_offset=-LOOKBACK_TRADING_DAYS, allow_nonexistent_upstream_partitions=True
    )
    return dg.AssetDep(key, partition_mapping=mapping)


def build_feature_assets(partitions_def: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    return [
        _build_feature_asset(
            BARS_1M_KEY,
            [raw_asset_key("trades"), raw_asset_key("quotes")],
            _bars_1m_day,
            "One row per symbol-minute: OHLCV, VWAP, trade count, spread and imbalance stats.",
            partitions_def,
        ),
        _build_feature_asset(
            MARKET_KEY,
            [_with_lookback(BARS_1M_KEY), _with_lookback(raw_asset_key("bars"))],
            _market_day,
            "Model features per symbol-bar: microstructure, momentum, volatility, regime, turbulence, daily "
            "returns; windows reach into the trading days before the partition.",
            partitions_def,
            LOOKBACK_TRADING_DAYS,
        ),
        _build_feature_asset(
            OPTIONS_KEY,
            [raw_asset_key("option_snapshots")],
            _options_day,
            "Per underlying and snapshot: ATM IV, skew, term slope, put/call ratios, aggregate greeks.",
            partitions_def,
        ),
    ]
