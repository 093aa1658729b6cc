"""Regime features: is the symbol trending or ranging? Kaufman efficiency ratio, an ADX, and a 0/1 flag.

`regime_trend_score` is the mean of the 30-minute efficiency ratio and ADX/100 (both in [0, 1]);
`regime_trending` is 1 when the score is at least `TRENDING_THRESHOLD`. Backward windows only.
"""

from __future__ import annotations

from collections.abc import Callable

import polars as pl

ADX_PERIOD = 14
EFFICIENCY_WINDOW_MIN = 30
TRENDING_THRESHOLD = 0.3


def _wilder(expr: pl.Expr, period: int) -> pl.Expr:
    return expr.ewm_mean(alpha=1.0 / period, adjust=False, min_samples=period)


def directional_indicators(period: int) -> tuple[pl.Expr, pl.Expr]:
    """Wilder's +DI and -DI over `period` bars: 100 * Wilder-smoothed +DM (-DM) / Wilder-smoothed true range.

    Null for the first `period` bars (the first bar has no previous one); evaluate per symbol (`.over`).
    """
    close, high, low = pl.col("close"), pl.col("high"), pl.col("low")
    up = high.diff()
    down = -low.diff()
    plus_dm = pl.when((up > down) & (up > 0)).then(up).otherwise(pl.when(up.is_not_null()).then(0.0))
    minus_dm = pl.when((down > up) & (down > 0)).then(down).otherwise(pl.when(down.is_not_null()).then(0.0))
    prev_close = close.shift(1)
    true_range = pl.max_horizontal(high - low, (high - prev_close).abs(), (low - prev_close).abs())
    true_range = pl.when(prev_close.is_not_null()).then(true_range)
    atr = _wilder(true_range, period)
    return 100.0 * _wilder(plus_dm, period) / atr, 100.0 * _wilder(minus_dm, period) / atr


def directional_index(plus_di: pl.Expr, minus_di: pl.Expr) -> pl.Expr:
    """DX in [0, 100]: 100 |+DI - -DI| / (+DI + -DI); null where there was no directional movement."""
    di_sum = plus_di + minus_di
    return pl.when(di_sum > 0).then(100.0 * (plus_di - minus_di).abs() / di_sum)


def add_regime(frame: pl.LazyFrame, rows: Callable[[int], int]) -> pl.LazyFrame:
    """Adds the regime columns; expects `log_return_30m` and `realized_vol_30m` already present."""
    by = "symbol"
    close = pl.col("close")
    n_er = rows(EFFICIENCY_WINDOW_MIN)
    plus_di, minus_di = directional_indicators(ADX_PERIOD)  # a bar count on any interval
    frame = frame.with_columns(
        (
            (close - close.shift(n_er)).abs() / close.diff().abs().rolling_sum(n_er)
        ).over(by).alias("efficiency_ratio_30m"),
        plus_di.over(by).alias("_plus_di"),
        minus_di.over(by).alias("_minus_di"),
        (pl.col("log_return_30m") / pl.col("realized_vol_30m")).alias("trend_strength_30m"),
    )
    dx = directional_index(pl.col("_plus_di"), pl.col("_minus_di"))
    frame = frame.with_columns(_wilder(dx, ADX_PERIOD).over(by).alias("adx_14")).drop("_plus_di", "_minus_di")
    score = (pl.col("efficiency_ratio_30m") + pl.col("adx_14") / 100.0) / 2.0
    return frame.with_columns(score.alias("regime_trend_score")).with_columns(
        (pl.col("regime_trend_score") >= TRENDING_THRESHOLD).cast(pl.Int8).alias("regime_trending")
    )
