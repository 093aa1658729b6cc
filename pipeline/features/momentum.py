"""Momentum features: backward-looking returns, RSI, MACD, moving-average and range position.

Every expression reads only the current and earlier rows of its symbol (shift(n>0), backward rolling windows,
ewm, cumulative aggregates), so the value at minute t is known at t. Minute horizons are turned into rows by
`rows`, so bar-only symbols with coarser bars get the same horizons; RSI, MACD and the stochastic count bars on
any interval; the session columns reset at each open.
"""

from __future__ import annotations

from collections.abc import Callable

import polars as pl

RETURN_HORIZONS_MIN: tuple[int, ...] = (1, 5, 15, 30, 60)
RSI_PERIOD = 14
MACD_FAST, MACD_SLOW, MACD_SIGNAL = 12, 26, 9
STOCH_PERIOD = 14


def _ewm(expr: pl.Expr, *, alpha: float, min_samples: int) -> pl.Expr:
    # adjust=False: the recursive form y_t = (1 - a) y_{t-1} + a x_t, seeded with the first value.
    return expr.ewm_mean(alpha=alpha, adjust=False, min_samples=min_samples)


def rsi(close: pl.Expr, period: int = RSI_PERIOD) -> pl.Expr:
    """Wilder RSI in [0, 100]: 100 * avg_gain / (avg_gain + avg_loss), smoothing alpha = 1/period."""
    change = close.diff()
    gain = _ewm(change.clip(lower_bound=0.0), alpha=1.0 / period, min_samples=period)
    loss = _ewm((-change).clip(lower_bound=0.0), alpha=1.0 / period, min_samples=period)
    # A flat window has no gains and no losses: neutral 50 rather than 0/0.
    return pl.when(gain + loss > 0).then(100.0 * gain / (gain + loss)).otherwise(pl.when(gain.is_not_null()).then(50.0))


def add_momentum(frame: pl.LazyFrame, rows: Callable[[int], int]) -> pl.LazyFrame:
    """Adds the momentum columns (see `pipeline.features.catalog`)."""
    close = pl.col("close")
    by = "symbol"
    session = ("symbol", "trading_day")
    fast = 2.0 / (MACD_FAST + 1)
    slow = 2.0 / (MACD_SLOW + 1)
    frame = frame.with_columns(
        # A sum of one-bar returns (`ret_1`), so a window across the open skips the overnight gap.
        *[pl.col("ret_1").rolling_sum(rows(h)).over(by).alias(f"log_return_{h}m") for h in RETURN_HORIZONS_MIN],
        rsi(close, RSI_PERIOD).over(by).alias("rsi_14"),
        (_ewm(close, alpha=fast, min_samples=MACD_SLOW) - _ewm(close, alpha=slow, min_samples=MACD_SLOW))
        .over(by).alias("macd"),
        (close / close.rolling_mean(rows(15)) - 1.0).over(by).alias("price_vs_sma_15m"),
        (close / close.rolling_mean(rows(60)) - 1.0).over(by).alias("price_vs_sma_60m"),
        (
            (close - pl.col("low").rolling_min(STOCH_PERIOD))
            / (pl.col("high").rolling_max(STOCH_PERIOD) - pl.col("low").rolling_min(STOCH_PERIOD))
        ).over(by).alias("stochastic_k_14"),
        (close / close.drop_nulls().first()).log().over(session).alias("session_return"),
        (close / pl.col("high").cum_max()).log().over(session).alias("distance_from_session_high"),
        (close / pl.col("low").cum_min()).log().over(session).alias("distance_from_session_low"),
    )
    signal = 2.0 / (MACD_SIGNAL + 1)
    frame = frame.with_columns(
        _ewm(pl.col("macd"), alpha=signal, min_samples=MACD_SIGNAL).over(by).alias("macd_signal")
    )
    return frame.with_columns((pl.col("macd") - pl.col("macd_signal")).alias("macd_hist"))
