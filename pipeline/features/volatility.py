"""Volatility features: realized volatility over several windows, Parkinson, Garman-Klass, vol of vol, range.

Per-window values are in log-return units over the window (realized) or per bar (range estimators); nothing is
annualized so the numbers mean the same thing for any session length. Backward windows only.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import polars as pl

REALIZED_WINDOWS_MIN: tuple[int, ...] = (5, 15, 30, 60)
RANGE_WINDOWS_MIN: tuple[int, ...] = (15, 30)


def add_volatility(frame: pl.LazyFrame, rows: Callable[[int], int]) -> pl.LazyFrame:
    """Adds the volatility columns; expects `ret_1` (one-row log return of close)."""
    by = "symbol"
    hl2 = (pl.col("high") / pl.col("low")).log() ** 2
    co2 = (pl.col("close") / pl.col("open")).log() ** 2
    gk_bar = 0.5 * hl2 - (2.0 * math.log(2.0) - 1.0) * co2
    frame = frame.with_columns(
        *[
            (pl.col("ret_1") ** 2).rolling_sum(rows(w)).sqrt().over(by).alias(f"realized_vol_{w}m")
            for w in REALIZED_WINDOWS_MIN
        ],
        *[
            (hl2.rolling_mean(rows(w)) / (4.0 * math.log(2.0))).sqrt().over(by).alias(f"parkinson_vol_{w}m")
            for w in RANGE_WINDOWS_MIN
        ],
        # The GK bar term can dip below zero on a tiny range; clip so the square root stays real.
        *[
            gk_bar.rolling_mean(rows(w)).clip(lower_bound=0.0).sqrt().over(by).alias(f"garman_klass_vol_{w}m")
            for w in RANGE_WINDOWS_MIN
        ],
        (1e4 * (pl.col("high") - pl.col("low")) / pl.col("close")).alias("bar_range_bps"),
    )
    return frame.with_columns(
        pl.col("realized_vol_5m").rolling_std(rows(30)).over(by).alias("vol_of_vol_30m"),
        (pl.col("realized_vol_5m") / pl.col("realized_vol_60m") * math.sqrt(60 / 5)).alias("vol_ratio_5m_60m"),
    )
