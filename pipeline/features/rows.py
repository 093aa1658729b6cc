"""features.bars_1m rows and raw.bars rows in one shape: bars stamped at their END inside their session.

`features.market` computes every window over these rows, and `daily_closes` takes a symbol's daily close from
them (the close of the session's last bar), so tick-derived and bar-only symbols are read one way.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

import polars as pl

from pipeline.contract.calendar import TradingSession
from pipeline.contract.schemas import UTC_TS
from pipeline.features.bars import BARS_1M_COLUMNS, utc_ts
from pipeline.features.daily import CLOSES_SCHEMA

BarStamp = Literal["end", "start"]
_INTERVAL = re.compile(r"^\s*(\d+)\s*(m|min|h|d)\s*$", re.IGNORECASE)
_MINUTES_PER_UNIT = {"m": 1, "min": 1, "h": 60, "d": 24 * 60}
_ROW_SCHEMA = {"symbol": pl.Utf8, "ts": UTC_TS, "trading_day": pl.Date, "close": pl.Float64}


def interval_minutes(interval: str) -> int:
    """'1m' -> 1, '5min' -> 5, '1h' -> 60, '1d' -> 1440; anything else is an error that names the input."""
    match = _INTERVAL.match(interval)
    if not match or int(match.group(1)) == 0:
        raise ValueError(
            f"raw.bars interval {interval!r} is not understood; use a count and a unit like '1m', '5m', '1h', '1d'"
        )
    return int(match.group(1)) * _MINUTES_PER_UNIT[match.group(2).lower()]


def _bars_1m_columns(frame: pl.DataFrame) -> list[pl.Expr]:
    """The features.bars_1m columns of `frame`, a null float column for each it lacks (tick-only ones on bars)."""
    return [pl.col(c) if c in frame.columns else pl.lit(None, dtype=pl.Float64).alias(c) for c in BARS_1M_COLUMNS]


def tick_rows(bars_1m: pl.DataFrame) -> pl.DataFrame:
    """features.bars_1m rows with bar_interval '1m' and _minutes 1 (columns it lacks are null)."""
    frame = bars_1m.select(*_bars_1m_columns(bars_1m))
    return utc_ts(frame).with_columns(bar_interval=pl.lit("1m"), _minutes=pl.lit(1, dtype=pl.Int64))


def bar_rows(bars: pl.DataFrame, sessions: Sequence[TradingSession], bar_ts: BarStamp) -> pl.DataFrame:
    """raw.bars rows as bars_1m-shaped rows stamped at bar end, inside their own session; tick-only columns null.

    Every interval is kept (`_minutes` says which); a daily bar (often stamped with the bare date) is known at the
    close of its session. Rows of days not in `sessions`, or ending outside their session, are dropped.
    """
    if bar_ts not in ("end", "start"):
        raise ValueError(f"bar_ts must be 'end' or 'start', got {bar_ts!r}")
    minutes = {i: interval_minutes(i) for i in bars["interval"].unique().to_list()}
    bounds = pl.DataFrame(
        {"trading_day": [s.trading_day for s in sessions], "_open": [s.open for s in sessions],
         "_close": [s.close for s in sessions]},
        schema={"trading_day": pl.Date, "_open": UTC_TS, "_close": UTC_TS},
    )
    end = pl.col("ts") + pl.duration(minutes=pl.col("_minutes")) if bar_ts == "start" else pl.col("ts")
    rows = (
        utc_ts(bars)
        .with_columns(_minutes=pl.col("interval").replace_strict(minutes, return_dtype=pl.Int64))
        .join(bounds, on="trading_day")
        .with_columns(
            ts=pl.when(pl.col("_minutes") >= 24 * 60).then(pl.col("_close")).otherwise(end),
            bar_interval=pl.col("interval"),
        )
        .filter(pl.col("ts") > pl.col("_open"), pl.col("ts") <= pl.col("_close"))
    )
    return rows.select(
        *_bars_1m_columns(rows), "bar_interval", "_minutes",
    ).with_columns(trade_count=pl.col("trade_count").cast(pl.Int64), quote_count=pl.col("quote_count").cast(pl.Int64))


def finest_bars(rows: pl.DataFrame, keep: pl.DataFrame | None = None) -> pl.DataFrame:
    """Bar rows of the finest interval per symbol, so a symbol has one row per bar end.

    With `keep` (symbol, _minutes), the rows of those pairs: the earlier days of a symbol follow its interval today.
    """
    if keep is not None:
        return rows.join(keep, on=["symbol", "_minutes"], how="semi")
    return rows.filter(pl.col("_minutes") == pl.col("_minutes").min().over("symbol"))


def daily_closes(ticks: pl.DataFrame, bars: pl.DataFrame) -> pl.DataFrame:
    """(symbol, trading_day, close): the close of each symbol's last bar of each session.

    `ticks` and `bars` are `tick_rows` / `bar_rows` output (only symbol, ts, trading_day, close and, for bars,
    _minutes are read). A tick-derived symbol-day ignores its raw bars; among bars ending together the finest wins.
    """
    tick_days = ticks.select(*_ROW_SCHEMA).cast(_ROW_SCHEMA)
    bar_days = (
        bars.select(*_ROW_SCHEMA, "_minutes").cast(_ROW_SCHEMA)
        .join(tick_days.select("symbol", "trading_day").unique(), on=["symbol", "trading_day"], how="anti")
        .sort("symbol", "trading_day", "ts", pl.col("_minutes"), descending=[False, False, False, True])
        .drop("_minutes")
    )
    every = pl.concat([tick_days.sort("symbol", "trading_day", "ts"), bar_days])
    closes = every.group_by("symbol", "trading_day", maintain_order=True).agg(pl.col("close").drop_nulls().last())
    return closes.drop_nulls("close").cast(CLOSES_SCHEMA)
