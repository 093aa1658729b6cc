"""Feature assets: read the raw partitions of each trading day, call the framework-free feature code, write
`features.bars_1m`, `features.market` and `features.options` (one transaction per run, like the raw tables)."""

from collections.abc import Callable
from datetime import date

import dagster as dg
import polars as pl

from assets.ingest import raw_asset_key
from assets.metadata import frame_metadata, partition_days, window_metadata
from pipeline.features import bars_1m, market_features, options_features
from pipeline.lake import Warehouse
from pipeline.market.calendar import trading_session
from resources.warehouse import WarehouseResource

FEATURES_GROUP = "features"
BARS_1M_KEY = dg.AssetKey(["features", "bars_1m"])
MARKET_KEY = dg.AssetKey(["features", "market"])
OPTIONS_KEY = dg.AssetKey(["features", "options"])
FEATURE_KEYS = (BARS_1M_KEY, MARKET_KEY, OPTIONS_KEY)

# One trading day of one features table from what the warehouse already holds: (rows out, input rows read).
DayBuilder = Callable[[Warehouse, date], tuple[pl.DataFrame, int]]


def _bars_1m_day(store: Warehouse, day: date) -> tuple[pl.DataFrame, int]:
    trades = store.read_partition("raw.trades", [day])
    quotes = store.read_partition("raw.quotes", [day])
    return bars_1m(trades, quotes, trading_session(day)), trades.height + quotes.height


def _market_day(store: Warehouse, day: date) -> tuple[pl.DataFrame, int]:
    # Symbols with only raw.bars (a bar-only source) still get rows: market_features uses `bars` for them.
    # raw.bars ts is the bar's start, as Alpaca, IBKR and most files stamp it.
    minute_bars = store.read_partition("features.bars_1m", [day])
    raw_bars = store.read_partition("raw.bars", [day])
    features = market_features(minute_bars, trading_session(day), bars=raw_bars, bar_ts="start")
    return features, minute_bars.height + raw_bars.height


def _options_day(store: Warehouse, day: date) -> tuple[pl.DataFrame, int]:
    snapshots = store.read_partition("raw.option_snapshots", [day])
    return options_features(snapshots), snapshots.height


def _build_feature_asset(
    key: dg.AssetKey,
    deps: list[dg.AssetKey],
    build_day: DayBuilder,
    description: str,
    partitions_def: dg.PartitionsDefinition,
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
    )
    def _features(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
        days = partition_days(context)
        store = warehouse.warehouse()
        built = [build_day(store, day) for day in days]
        frames = [frame for frame, _ in built]
        frame = pl.concat([f for f in frames if not f.is_empty()] or frames[:1], how="vertical_relaxed")
        store.write_partition(table, days, frame)
        symbols = frame["symbol" if "symbol" in frame.columns else "underlying"].n_unique() if frame.height else 0
        context.log.info(f"{table}: {frame.height} rows for {symbols} symbol(s) over {len(days)} trading day(s)")
        return dg.MaterializeResult(
            metadata={
                **window_metadata(days),
                **frame_metadata(frame, store.row_count(table)),
                "symbols": symbols,
                "rows_read": sum(rows_read for _, rows_read in built),
            }
        )

    return _features


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
            [BARS_1M_KEY, raw_asset_key("bars")],
            _market_day,
            "Model features per symbol-minute: microstructure, momentum, volatility, regime, turbulence.",
            partitions_def,
        ),
        _build_feature_asset(
            OPTIONS_KEY,
            [raw_asset_key("option_snapshots")],
            _options_day,
            "Per underlying and snapshot: ATM IV, skew, term slope, put/call ratios, aggregate greeks.",
            partitions_def,
        ),
    ]
