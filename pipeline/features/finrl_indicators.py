"""FinRL's default technical indicators, under FinRL's names, on bars of any interval (bar counts: days on daily bars).

FinRL (`config.INDICATORS`) asks stockstats for macd, boll_ub, boll_lb, rsi_30, cci_30, dx_30, close_30_sma and
close_60_sma. `macd` is the momentum group's column; the others are added here with stockstats' formulas (sample
standard deviation in the bands, mean absolute deviation in CCI, Wilder smoothing in RSI and DX). Where the two
differ is the start of a series: stockstats averages partial windows and starts its recursive averages at a
symbol's first bar; here a window is null until full, and a recursive average starts at the first bar of the
lookback, which reaches far enough back (`Window.settle`) that this start no longer shows.
"""

from __future__ import annotations

import polars as pl

from pipeline.features.momentum import rsi
from pipeline.features.regime import directional_index, directional_indicators

FINRL_PERIOD = 30
"""RSI, CCI and DX window of FinRL's indicator set, in bars."""
BOLL_WINDOW, BOLL_STD_TIMES = 20, 2.0
SMA_WINDOWS: tuple[int, ...] = (30, 60)
CCI_CONSTANT = 0.015
"""Lambert's scale: about 70-80% of CCI values fall within +-100."""


def _cci(period: int) -> pl.Expr:
    typical = (pl.col("high") + pl.col("low") + pl.col("close")) / 3.0
    mean = typical.rolling_mean(period)
    # Mean absolute deviation from the window's own mean: every bar of the window against the same mean
    # (sum_horizontal would count a missing bar as 0, so it is taken only once the window is full).
    deviation = pl.sum_horizontal([(typical.shift(k) - mean).abs() for k in range(period)]) / period
    # A window without movement has no deviation: 0, as stockstats gives, rather than 0/0.
    return pl.when(mean.is_null()).then(None).when(deviation > 0).then(
        (typical - mean) / (CCI_CONSTANT * deviation)).otherwise(0.0)


def add_finrl_indicators(frame: pl.LazyFrame) -> pl.LazyFrame:
    """Adds the FinRL columns but macd (see `pipeline.features.catalog`); needs symbol, high, low, close."""
    by = "symbol"
    close = pl.col("close")
    middle = close.rolling_mean(BOLL_WINDOW)
    width = BOLL_STD_TIMES * close.rolling_std(BOLL_WINDOW)  # ddof 1, as pandas' rolling std in stockstats
    plus_di, minus_di = directional_indicators(FINRL_PERIOD)
    return frame.with_columns(
        rsi(close, FINRL_PERIOD).over(by).alias(f"rsi_{FINRL_PERIOD}"),
        _cci(FINRL_PERIOD).over(by).alias(f"cci_{FINRL_PERIOD}"),
        directional_index(plus_di, minus_di).over(by).alias(f"dx_{FINRL_PERIOD}"),
        (middle + width).over(by).alias("boll_ub"),
        (middle - width).over(by).alias("boll_lb"),
        *[close.rolling_mean(n).over(by).alias(f"close_{n}_sma") for n in SMA_WINDOWS],
    )
