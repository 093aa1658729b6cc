"""`features.market`: one row per symbol-minute of point-in-time model features for one trading day.

Inputs are the day's `features.bars_1m` and, optionally, `raw.bars` rows of bar-only symbols. The value at a
row's `ts` uses only rows with ts at or before it: windows look backward, nothing is normalized over the day.
Windows are specified in minutes; for a symbol with coarser bars they are converted to that many bars (at
least one), and a daily bar becomes one row at the session close.
"""

from __future__ import annotations

import math
import re
from typing import Literal

import polars as pl

from pipeline.features.bars import BARS_1M_COLUMNS, session_grid, utc_ts
from pipeline.features.catalog import market_feature_names
from pipeline.features.microstructure import add_microstructure
from pipeline.features.momentum import add_momentum
from pipeline.features.regime import add_regime
from pipeline.features.turbulence import turbulence_index
from pipeline.features.volatility import add_volatility
from pipeline.market.schemas import UTC_TS
from pipeline.market.source import TradingSession

KEY_COLUMNS: tuple[str, ...] = ("symbol", "ts", "trading_day", "bar_interval")
_INTERVAL = re.compile(r"^\s*(\d+)\s*(m|min|h|d)\s*$", re.IGNORECASE)
_MINUTES_PER_UNIT = {"m": 1, "min": 1, "h": 60, "d": 24 * 60}


def interval_minutes(interval: str) -> int:
    """'1m' -> 1, '5min' -> 5, '1h' -> 60, '1d' -> 1440; anything else is an error that names the input."""
    match = _INTERVAL.match(interval)
    if not match or int(match.group(1)) == 0:
        raise ValueError(
            f"raw.bars interval {interval!r} is not understood; use a count and a unit like '1m', '5m', '1h', '1d'"
        )
    return int(match.group(1)) * _MINUTES_PER_UNIT[match.group(2).lower()]


def _bar_rows(bars: pl.DataFrame, session: TradingSession, bar_ts: Literal["end", "start"]) -> pl.DataFrame:
    """raw.bars rows as bars_1m-shaped rows stamped at bar end, inside the session; tick-only columns null.

    A symbol with several intervals keeps only its finest one, so it has one row per bar end.
    """
    minutes = {i: interval_minutes(i) for i in bars["interval"].unique().to_list()}
    close = pl.lit(session.close).cast(UTC_TS)
    end = pl.col("ts") + pl.duration(minutes=pl.col("_minutes")) if bar_ts == "start" else pl.col("ts")
    rows = (
        utc_ts(bars)
        .with_columns(_minutes=pl.col("interval").replace_strict(minutes, return_dtype=pl.Int64))
        .filter(pl.col("_minutes") == pl.col("_minutes").min().over("symbol"))
        .with_columns(
            # A daily bar (often stamped with the bare date) is known at the close.
            ts=pl.when(pl.col("_minutes") >= 24 * 60).then(close).otherwise(end),
            bar_interval=pl.col("interval"),
        )
        .filter(pl.col("ts").is_between(session.open, session.close, closed="right"))
    )
    present = set(rows.columns)
    return rows.select(
        *[pl.col(c) if c in present else pl.lit(None, dtype=pl.Float64).alias(c) for c in BARS_1M_COLUMNS],
        "bar_interval", "_minutes",
    ).with_columns(
        trade_count=pl.col("trade_count").cast(pl.Int64), quote_count=pl.col("quote_count").cast(pl.Int64),
        trading_day=pl.lit(session.trading_day, dtype=pl.Date),
    )


def _features(rows_frame: pl.DataFrame, minutes_per_row: int) -> pl.LazyFrame:
    def rows(window_minutes: int) -> int:
        return max(1, math.ceil(window_minutes / minutes_per_row))

    frame = rows_frame.lazy().sort("symbol", "ts").with_columns(
        ret_1=(pl.col("close") / pl.col("close").shift(1)).log().over("symbol")
    )
    frame = add_momentum(frame, rows)
    frame = add_volatility(frame, rows)
    frame = add_regime(frame, rows)
    return add_microstructure(frame, rows)


def market_features(bars_1m: pl.DataFrame, session: TradingSession, bars: pl.DataFrame | None = None,
                    bar_ts: Literal["end", "start"] = "start") -> pl.DataFrame:
    """Point-in-time features per symbol and bar (columns: KEY_COLUMNS + the catalog's market features).

    `bars` are raw.bars rows; symbols already in `bars_1m` (tick data) ignore them. `bar_ts` says whether a raw
    bar's ts is its start (the raw.bars contract, the default: shifted by the interval so no bar is seen before it
    closed) or already its end.
    """
    if bar_ts not in ("end", "start"):
        raise ValueError(f"bar_ts must be 'end' or 'start', got {bar_ts!r}")
    ticks = utc_ts(bars_1m.select(BARS_1M_COLUMNS)).with_columns(
        bar_interval=pl.lit("1m"), _minutes=pl.lit(1, dtype=pl.Int64)
    )
    every = ticks
    if bars is not None and not bars.is_empty():
        bar_only = _bar_rows(bars, session, bar_ts)
        bar_only = bar_only.filter(~pl.col("symbol").is_in(ticks["symbol"].unique().implode()))
        every = pl.concat([ticks, bar_only.cast(ticks.schema)], how="vertical")  # type: ignore[arg-type]
    parts = [
        _features(part.drop("_minutes"), int(minutes))
        for (minutes,), part in every.partition_by("_minutes", as_dict=True).items()
    ] or [_features(every.drop("_minutes"), 1)]
    frame = pl.concat(pl.collect_all(parts), how="vertical")

    minute_rows = frame.join(every.filter(pl.col("_minutes") == 1).select("symbol", "ts"), on=["symbol", "ts"])
    grid = session_grid(["_"], session)["ts"]
    turbulence = turbulence_index(minute_rows.select("symbol", "ts", "close"), grid)
    frame = frame.join(turbulence, on="ts", how="left")
    features = market_feature_names()
    frame = frame.select(*KEY_COLUMNS, *features).sort("symbol", "ts")
    floats = [c for c in features if frame.schema[c] == pl.Float64]
    return frame.with_columns(pl.when(pl.col(c).is_finite()).then(pl.col(c)).alias(c) for c in floats)
