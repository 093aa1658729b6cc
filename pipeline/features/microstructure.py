"""Microstructure features: spreads, depth and order-flow imbalance, price impact and liquidity.

Tick-derived inputs (spreads, signed volume, quote sizes) are null on bar-only symbols, so the features built
from them are null there too; those built from OHLCV (Amihud, Roll, volume z-score, ...) are filled. Backward
windows only; the realized spread of minute t is that of the trades of minute t - 5 judged at t's mid.
"""

from __future__ import annotations

from collections.abc import Callable

import polars as pl

KYLE_WINDOW_MIN = 30
REALIZED_SPREAD_LAG_MIN = 5


def _rolling_slope(y: pl.Expr, x: pl.Expr, n: int) -> pl.Expr:
    """OLS slope of y on x over the last n rows: cov(x, y) / var(x) from rolling means."""
    mean_x, mean_y = x.rolling_mean(n), y.rolling_mean(n)
    cov = (x * y).rolling_mean(n) - mean_x * mean_y
    var = (x * x).rolling_mean(n) - mean_x * mean_x
    # var at float noise level means x never moved: no slope to estimate.
    return pl.when(var > 1e-12 * (x * x).rolling_mean(n)).then(cov / var)


def add_microstructure(frame: pl.LazyFrame, rows: Callable[[int], int]) -> pl.LazyFrame:
    """Adds the microstructure columns; expects `ret_1` and the bars_1m columns (tick ones may be null)."""
    by = "symbol"
    volume = pl.col("volume")
    dollar_volume = pl.col("close") * volume
    signed_dollar_m = pl.col("signed_dollar_volume") / 1e6  # sum(sign * size * price), each trade at its price
    n15, n30 = rows(15), rows(KYLE_WINDOW_MIN)
    lag = rows(REALIZED_SPREAD_LAG_MIN)
    dprice = pl.col("close").diff()
    mid_now = pl.col("mid")
    past_volume = volume.shift(lag)
    realized = (
        2e4 * (pl.col("signed_dollar_volume").shift(lag) - mid_now * pl.col("signed_volume").shift(lag))
        / (past_volume * mid_now)
    )
    roll_cov = (dprice * dprice.shift(1)).rolling_mean(n30) - dprice.rolling_mean(n30) * dprice.shift(1).rolling_mean(n30)
    cum_dollar = (pl.col("vwap") * volume).cum_sum()
    return frame.with_columns(
        pl.col("spread_mean").alias("quoted_spread"),
        pl.col("spread_mean_bps").alias("relative_spread_bps"),
        pl.col("spread_last_bps").alias("relative_spread_last_bps"),
        pl.col("spread_mean_bps").rolling_mean(n15).over(by).alias("relative_spread_15m_bps"),
        pl.col("spread_mean_bps").rolling_std(n15).over(by).alias("spread_volatility_15m_bps"),
        pl.col("depth_imbalance_mean").alias("depth_imbalance"),
        pl.col("depth_imbalance_last").alias("depth_imbalance_last"),
        pl.col("trade_sign_imbalance").alias("trade_sign_imbalance"),
        (pl.col("signed_volume").rolling_sum(n15) / volume.rolling_sum(n15)).over(by).alias("order_flow_imbalance_15m"),
        pl.when(volume > 0).then(pl.col("buy_volume") / volume).alias("buy_volume_ratio"),
        (1e4 * _rolling_slope(pl.col("ret_1"), signed_dollar_m, n30)).over(by).alias("kyle_lambda_30m"),
        (1e6 * pl.col("ret_1").abs().rolling_sum(n30) / dollar_volume.rolling_sum(n30)).over(by)
        .alias("amihud_illiquidity_30m"),
        pl.col("effective_spread_bps").alias("effective_spread_bps"),
        realized.over(by).alias("realized_spread_5m_bps"),
        # Roll (1984): a negative serial covariance of price changes implies a spread; a positive one, none.
        (2.0 * (-roll_cov).clip(lower_bound=0.0).sqrt()).over(by).alias("roll_spread_30m"),
        ((volume - volume.rolling_mean(n30)) / volume.rolling_std(n30)).over(by).alias("volume_zscore_30m"),
        (pl.col("trade_count").cast(pl.Float64).rolling_mean(rows(5))
         / pl.col("trade_count").cast(pl.Float64).rolling_mean(n30)).over(by).alias("trade_intensity_5m_30m"),
        pl.col("trade_count").cast(pl.Float64).rolling_mean(n15).over(by).alias("trades_per_minute_15m"),
        pl.when(pl.col("vwap") > 0).then(1e4 * (pl.col("close") / pl.col("vwap") - 1.0)).alias("vwap_deviation_bps"),
        (1e4 * (pl.col("close") * volume.cum_sum() / cum_dollar - 1.0)).over(by, "trading_day")
        .alias("session_vwap_deviation_bps"),
        dollar_volume.log1p().alias("log_dollar_volume"),
    )
