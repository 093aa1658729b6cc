"""features.market on landed daily bars through Dagster: every fitting window fills from its first full day, a
single-partition run reads its lookback from the warehouse, and a range backfill equals day-by-day runs."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest
import torch
from conftest import build_once, lake_cache_key

from pipeline.contract.calendar import trading_days
from pipeline.definitions import build_definitions
from pipeline.envs.portfolio import PortfolioAllocationEnv, PortfolioConfig
from pipeline.envs.warehouse_loader import MarketLoaderConfig, load_market_tensors
from pipeline.features.catalog import MARKET, features_of, market_feature_names
from pipeline.features.lookback import LOOKBACK_TRADING_DAYS
from pipeline.features.windows import MINUTES
from pipeline.lake import Warehouse
from resources.sources import MarketDataResource
from resources.warehouse import WarehouseResource

SYMBOLS = ("IDXA", "IDXB", "IDXC", "STK")
DAYS = trading_days("2024-03-01", "2024-06-28")  # 84 sessions: about four months of daily bars
LANDED_SEED = 2024  # of the landed random walks
RANGE_TAGS = {"dagster/asset_partition_range_start": DAYS[0].isoformat(),
              "dagster/asset_partition_range_end": DAYS[-1].isoformat()}

_TICKS = "needs trades or quotes (daily bars have neither)"
_MINUTES = "minute window shorter than a daily bar"
# The columns a daily bar cannot fill, and why; every other numeric column must fill from its first full day.
CANNOT_FIT: dict[str, str] = {
    **dict.fromkeys([
        "quoted_spread", "relative_spread_bps", "relative_spread_last_bps", "relative_spread_15m_bps",
        "spread_volatility_15m_bps", "depth_imbalance", "depth_imbalance_last", "trade_sign_imbalance",
        "order_flow_imbalance_15m", "buy_volume_ratio", "kyle_lambda_30m", "effective_spread_bps",
        "realized_spread_5m_bps", "trade_intensity_5m_30m", "trades_per_minute_15m", "vwap_deviation_bps",
        "session_vwap_deviation_bps",
    ], _TICKS),
    **dict.fromkeys([
        "log_return_1m", "log_return_5m", "log_return_15m", "log_return_30m", "log_return_60m", "price_vs_sma_15m",
        "price_vs_sma_60m", "realized_vol_5m", "realized_vol_15m", "realized_vol_30m", "realized_vol_60m",
        "parkinson_vol_15m", "parkinson_vol_30m", "garman_klass_vol_15m", "garman_klass_vol_30m",
        "vol_of_vol_30m", "vol_ratio_5m_60m", "efficiency_ratio_30m", "trend_strength_30m", "regime_trend_score",
        "regime_trending", "amihud_illiquidity_30m", "roll_spread_30m", "volume_zscore_30m",
    ], _MINUTES),
    "turbulence_index": "the minute index is over one-minute rows; there are none",
    "drawdown_252d": "252-day window, longer than the 84 days landed",
    "turbulence_index_daily": "252-day window (FinRL's), longer than the 84 days landed",
}


def _land_daily_bars(landing: Path) -> None:
    """Seeded correlated random walks, one bar per symbol and session, ts as a bare date (how daily files come)."""
    rng = np.random.default_rng(LANDED_SEED)
    steps = 0.01 * (0.6 * rng.standard_normal((len(DAYS), 1)) + 0.8 * rng.standard_normal((len(DAYS), len(SYMBOLS))))
    closes = 100.0 * np.exp(np.cumsum(steps, axis=0))
    lines = ["symbol,ts,interval,open,high,low,close,volume"]
    for i, day in enumerate(DAYS):
        for j, symbol in enumerate(SYMBOLS):
            close = closes[i, j]
            open_ = closes[i - 1, j] if i else close
            lines.append(f"{symbol},{day.isoformat()},1d,{open_:.4f},{max(open_, close) * 1.004:.4f},"
                         f"{min(open_, close) * 0.996:.4f},{close:.4f},{1_000_000 + 1000 * i}")
    landing.mkdir(parents=True, exist_ok=True)
    (landing / "daily.csv").write_text("\n".join(lines) + "\n")


def daily_bar_lake(lake: Path, lake_cache: Path) -> tuple[list[dg.AssetsDefinition], dict]:
    """The landed daily bars of SYMBOLS over DAYS, ingested with their features in one range run (the data assets
    and their resources returned). Built once per test session: test_assets_training_files.py reads the same lake."""
    resources = {"warehouse": WarehouseResource(),
                 "market_data": MarketDataResource(source="files", symbols=list(SYMBOLS))}
    assets = [a for a in build_definitions().assets if a.key.path[-1] in ("bars", "bars_1m", "market")]

    def build() -> None:
        _land_daily_bars(lake / "landing" / "bars")
        assert dg.materialize(assets, resources=resources, tags=RANGE_TAGS).success

    key = lake_cache_key("landed-daily-bars", days=DAYS, symbols=SYMBOLS, seed=LANDED_SEED,
                         market=resources["market_data"])
    build_once(lake_cache, key, lake, build)
    return assets, resources


@pytest.fixture(scope="module")
def setup(module_lake_env: dict[str, str], lake_cache: Path) -> tuple[list[dg.AssetsDefinition], dict, Warehouse]:
    lake = Path(module_lake_env["PIPELINE_DATA_LAKE"])
    assets, resources = daily_bar_lake(lake, lake_cache)
    return assets, resources, Warehouse(lake / "warehouse.duckdb")


def _market(store: Warehouse) -> pl.DataFrame:
    return store.query("SELECT * FROM features.market ORDER BY symbol, ts")


def _market_only(assets: list[dg.AssetsDefinition]) -> list[dg.AssetsDefinition]:
    return [a for a in assets if a.key.path == ["features", "market"]]


def test_daily_bars_fill_every_fitting_feature_from_its_first_full_day(setup) -> None:
    _, _, store = setup
    market = _market(store)
    assert market.height == len(DAYS) * len(SYMBOLS)
    assert set(market["bar_interval"].unique()) == {"1d"}
    # Every minute window is in the list, with the reason it cannot fit; the list names only real columns.
    assert {f.name for f in features_of(MARKET) if f.window.unit == MINUTES} <= set(CANNOT_FIT)
    assert set(CANNOT_FIT) <= set(market_feature_names())
    warmup = {f.name: f.window.warmup for f in features_of(MARKET)}
    for symbol in SYMBOLS:
        rows = market.filter(pl.col("symbol") == symbol).sort("ts")
        for column in market_feature_names():
            values = rows[column]
            if column in CANNOT_FIT:
                assert values.null_count() == len(DAYS), (symbol, column, CANNOT_FIT[column])
                continue
            first = warmup[column]
            assert first < len(DAYS), column
            assert values.head(first).null_count() == first, (symbol, column, "filled before its window")
            assert values.tail(len(DAYS) - first).null_count() == 0, (symbol, column, "null after its window")


def test_a_single_partition_run_reads_its_lookback_from_the_warehouse(setup) -> None:
    assets, resources, store = setup
    before = _market(store)
    day = DAYS[-1].isoformat()
    result = dg.materialize(_market_only(assets), resources=resources, partition_key=day)
    assert result.success
    after = _market(store)
    assert after.equals(before)
    (materialization,) = result.asset_materializations_for_node("features__market")
    assert materialization.metadata["lookback_trading_days"].value == LOOKBACK_TRADING_DAYS
    assert materialization.metadata["rows_written"].value == len(SYMBOLS)
    # Not vacuous: day D's 60-day returns and MACD signal exist only through the lookback.
    last = after.filter(pl.col("trading_day") == DAYS[-1])
    assert last["log_return_60d"].null_count() == 0 and last["macd_signal"].null_count() == 0


def test_a_range_backfill_equals_day_by_day_runs(setup) -> None:
    assets, resources, store = setup
    from_range = _market(store)
    picked = [DAYS[0], DAYS[20], DAYS[21], DAYS[60]]
    for day in picked:
        store.execute("DELETE FROM features.market WHERE trading_day = ?", [day])
        assert dg.materialize(_market_only(assets), resources=resources, partition_key=day.isoformat()).success
    day_by_day = _market(store)
    assert day_by_day.equals(from_range)
    assert day_by_day.filter(pl.col("trading_day") == DAYS[60])["log_return_60d"].null_count() == 0
    # A shorter range inside the first one gives the same values too.
    tags = {"dagster/asset_partition_range_start": DAYS[20].isoformat(),
            "dagster/asset_partition_range_end": DAYS[22].isoformat()}
    assert dg.materialize(_market_only(assets), resources=resources, tags=tags).success
    assert _market(store).equals(from_range)


def test_the_upstream_partitions_reach_back_the_catalog_lookback() -> None:
    (market,) = [a for a in build_definitions().assets if a.key.path == ["features", "market"]]
    for upstream in (dg.AssetKey(["features", "bars_1m"]), dg.AssetKey(["raw", "bars"])):
        mapping = market.get_partition_mapping(upstream)
        assert isinstance(mapping, dg.TimeWindowPartitionMapping)
        assert mapping.start_offset == -LOOKBACK_TRADING_DAYS and mapping.end_offset == 0
        assert mapping.allow_nonexistent_upstream_partitions


def test_a_daily_bar_portfolio_rebalances_daily_over_months_from_the_warehouse(setup) -> None:
    """The whole path on daily bars: landed files -> features.market -> the loader -> a portfolio whose episodes
    span 20 trading days, walked once in time order."""
    _, _, store = setup
    config = MarketLoaderConfig(features=("log_return_1d", "log_return_5d", "realized_vol_20d", "drawdown_60d"),
                                turbulence="turbulence_index_daily")
    market = load_market_tensors(store, DAYS, config=config)
    # Risk-off on daily bars reads the daily index; null (no trigger) until its 252-day window is full.
    daily = _market(store).group_by("trading_day").agg(pl.col("turbulence_index_daily").max()).sort("trading_day")
    assert market.turbulence[:, 0].tolist() == [0.0 if v is None else v for v in daily["turbulence_index_daily"]]
    with pytest.raises(ValueError, match="turbulence must be one of"):
        MarketLoaderConfig(turbulence="vix")
    assert market.symbols == tuple(sorted(SYMBOLS)) and market.session_minutes.tolist() == [1] * len(DAYS)
    env = PortfolioAllocationEnv(market, num_envs=2, config=PortfolioConfig(episode_days=20, evaluation=True))
    env.reset(seed=0)
    ends, values = [], []
    while not bool(env.eval_finished):
        action = torch.tensor([[1.0, -1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0, -1.0]])
        _, reward, terminated, truncated, info = env.step(action)
        assert not truncated.any() and torch.isfinite(reward).all()
        for i in torch.nonzero(terminated).flatten().tolist():
            if int(info["episode_id"][i]) >= 0:
                ends.append((int(info["episode_id"][i]), int(info["day"][i])))
                values.append(float(info["value"][i]))
    # Consecutive blocks of 20 days, each episode ending on its block's last day; the last block is what is left.
    last = len(DAYS) - 1
    assert sorted(ends) == [(0, 19), (1, 39), (2, 59), (3, 79), (4, last)]
    assert all(v != 1.0 for v in values), "a portfolio that held risky assets for weeks changed value"
    # The first 60-day drawdown is missing until 59 earlier closes exist: flagged, not a silent 0.
    flag = market.feature_names.index("drawdown_60d_missing")
    assert market.features[:59, 0, :, flag].eq(1).all() and market.features[60:, 0, :, flag].eq(0).all()
