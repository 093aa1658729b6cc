"""`features.market`: one row per symbol-bar of point-in-time model features for one trading day.

Inputs are the day's `features.bars_1m` and, optionally, `raw.bars` rows of bar-only symbols, plus a
`MarketHistory` of the sessions before it. Windows reach into those earlier sessions (their rows are put before
the day's, the features computed over both, and only the day's rows kept); the daily features read the earlier
sessions' closes. The value at a row's `ts` uses only rows with ts at or before it: windows look backward, nothing
is normalized over the day. Window units are the catalog's (`pipeline.features.catalog.Window`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import polars as pl

from pipeline.contract.calendar import TradingSession
from pipeline.features.bars import session_grid
from pipeline.features.catalog import MARKET, features_of, market_feature_names
from pipeline.features.daily import add_daily
from pipeline.features.finrl_indicators import add_finrl_indicators
from pipeline.features.lookback import (
    LOOKBACK_TRADING_DAYS,
    MarketHistory,
    row_lookback_sessions,
    session_closes,
)
from pipeline.features.microstructure import add_microstructure
from pipeline.features.momentum import add_momentum
from pipeline.features.regime import add_regime
from pipeline.features.rows import BarStamp, bar_rows, finest_bars, tick_rows
from pipeline.features.turbulence import daily_turbulence, turbulence_index
from pipeline.features.volatility import add_volatility

KEY_COLUMNS: tuple[str, ...] = ("symbol", "ts", "trading_day", "bar_interval")


def _unfit(interval_minutes: int) -> list[str]:
    """Columns whose minute window is shorter than this bar interval: they stay null."""
    return [f.name for f in features_of(MARKET) if not f.window.fits(interval_minutes)]


def _features(rows_frame: pl.DataFrame, minutes_per_row: int) -> pl.LazyFrame:
    def rows(window_minutes: int) -> int:
        return max(1, math.ceil(window_minutes / minutes_per_row))

    close, previous = pl.col("close"), pl.col("close").shift(1)
    frame = rows_frame.lazy().sort("symbol", "ts").with_columns(
        # Minutes of trading: the overnight gap is not one, so a session's first bar counts from its own open
        # (the gap is in the daily features). Otherwise a 1-minute return at the open is the whole night's move.
        ret_1=pl.when(previous.is_null()).then(None)
        .when(pl.col("trading_day") == pl.col("trading_day").shift(1)).then((close / previous).log())
        .otherwise((close / pl.col("open")).log())
        .over("symbol")
    )
    frame = add_momentum(frame, rows)
    frame = add_volatility(frame, rows)
    frame = add_regime(frame, rows)
    frame = add_finrl_indicators(frame)
    frame = add_microstructure(frame, rows)
    # The minute turbulence is not computed here: bar rows get the value of their minute (see market_features).
    computed = set(frame.collect_schema().names())
    unfit = [c for c in _unfit(minutes_per_row) if c in computed]
    return frame.with_columns(pl.when(pl.lit(False)).then(pl.col(c)).alias(c) for c in unfit)


def _null_where_not_finite(frame: pl.DataFrame, columns: Sequence[str]) -> pl.DataFrame:
    """The contract is null, never NaN or inf: a 0/0 or a log of 0 in a float column becomes null."""
    floats = [c for c in columns if frame.schema[c] == pl.Float64]
    return frame.with_columns(pl.when(pl.col(c).is_finite()).then(pl.col(c)).alias(c) for c in floats)


def _earlier_rows(history: MarketHistory, ticks: pl.DataFrame, bar_only: pl.DataFrame,
                  bar_ts: BarStamp) -> pl.DataFrame:
    """The history's rows of today's symbols from today's source (ticks, or bars of today's interval), as far back
    as each interval's windows reach."""
    parts = [tick_rows(history.bars_1m).join(ticks.select("symbol").unique(), on="symbol", how="semi")]
    if history.bars is not None and not history.bars.is_empty() and bar_only.height:
        keep = bar_only.select("symbol", "_minutes").unique()
        parts.append(finest_bars(bar_rows(history.bars, history.sessions, bar_ts), keep))
    rows = pl.concat([p.cast(ticks.schema) for p in parts], how="vertical")  # type: ignore[arg-type]
    days = history.days
    age = {day: len(days) - i for i, day in enumerate(days)}  # 1 = the session just before today
    reach = {m: row_lookback_sessions(m) for m in rows["_minutes"].unique().to_list()}
    return rows.filter(
        pl.col("trading_day").replace_strict(age, default=None, return_dtype=pl.Int64)
        <= pl.col("_minutes").replace_strict(reach, default=0, return_dtype=pl.Int64)
    )


def market_features(bars_1m: pl.DataFrame, session: TradingSession, bars: pl.DataFrame | None = None,
                    bar_ts: BarStamp = "start", history: MarketHistory | None = None) -> pl.DataFrame:
    """Point-in-time features per symbol and bar of `session` (columns: KEY_COLUMNS + the catalog's market features).

    `bars` are raw.bars rows; symbols already in `bars_1m` (tick data) ignore them. `bar_ts` says whether a raw
    bar's ts is its start (the raw.bars contract, the default: shifted by the interval so no bar is seen before it
    closed) or already its end. `history` holds the sessions before this one (see `lookback.market_history`);
    without it every window starts at the open and the daily features stay null.
    """
    history = history if history is not None else MarketHistory((), bars_1m.clear())
    history.check_before(session)
    ticks = tick_rows(bars_1m)
    bar_only = ticks.clear()
    if bars is not None and not bars.is_empty():
        dated = bars.with_columns(trading_day=pl.lit(session.trading_day, dtype=pl.Date))
        bar_only = finest_bars(bar_rows(dated, [session], bar_ts)).cast(ticks.schema)  # type: ignore[arg-type]
        bar_only = bar_only.filter(~pl.col("symbol").is_in(ticks["symbol"].unique().implode()))
    today = pl.concat([ticks, bar_only], how="vertical")
    every = pl.concat([_earlier_rows(history, ticks, bar_only, bar_ts), today], how="vertical")
    parts = [
        _features(part.drop("_minutes"), int(minutes))
        for (minutes,), part in every.partition_by("_minutes", as_dict=True).items()
    ] or [_features(every.drop("_minutes"), 1)]
    frame = pl.concat(pl.collect_all(parts), how="vertical").filter(pl.col("trading_day") == session.trading_day)

    minute_rows = today.filter(pl.col("_minutes") == 1).select("symbol", "ts", "close")
    grid = session_grid(["_"], session)["ts"]
    frame = frame.join(turbulence_index(minute_rows, grid), on="ts", how="left")
    frame = add_daily(frame, history.closes, history.days)
    current = today.select("symbol", "ts", "close")
    frame = frame.join(daily_turbulence(current, history.closes, history.days), on="ts", how="left")
    features = market_feature_names()
    return _null_where_not_finite(frame.select(*KEY_COLUMNS, *features).sort("symbol", "ts"), features)


def market_features_days(sessions: Sequence[TradingSession], bars_1m: pl.DataFrame, bars: pl.DataFrame | None = None,
                         bar_ts: BarStamp = "start", targets: int | None = None) -> pl.DataFrame:
    """features.market of the last `targets` of `sessions` (default: all), each day from the sessions before it.

    `sessions` are consecutive trading days, oldest first; `bars_1m` and `bars` hold their rows. Day D is
    computed with the (up to LOOKBACK_TRADING_DAYS) sessions before it as its history: what `market_features`
    gives D with that history alone, so a range equals day-by-day calls. Only the sessions that the minute windows
    reach need full `bars_1m` rows; older ones may carry just symbol, ts, trading_day and close.
    """
    sessions = list(sessions)
    targets = len(sessions) if targets is None else targets
    if not 1 <= targets <= len(sessions):
        raise ValueError(f"targets={targets}: name between 1 and the {len(sessions)} sessions given")
    closes = session_closes(sessions, bars_1m, bars, bar_ts)
    has_bars = bars is not None and bars.height > 0
    frames = []
    for position in range(len(sessions) - targets, len(sessions)):
        session, earlier = sessions[position], sessions[max(0, position - LOOKBACK_TRADING_DAYS): position]
        days = [s.trading_day for s in earlier]
        minute_days = days[max(0, len(days) - row_lookback_sessions(1)):]
        history = MarketHistory(
            tuple(earlier),
            bars_1m.filter(pl.col("trading_day").is_in(minute_days)),
            bars.filter(pl.col("trading_day").is_in(days)) if has_bars else None,
            closes.filter(pl.col("trading_day").is_in(days)),
        )
        day_bars = bars.filter(pl.col("trading_day") == session.trading_day) if has_bars else None
        frames.append(market_features(bars_1m.filter(pl.col("trading_day") == session.trading_day), session,
                                      bars=day_bars, bar_ts=bar_ts, history=history))
    return pl.concat(frames, how="vertical")


def market_features_without_history(bars_1m: pl.DataFrame, columns: Sequence[str]) -> pl.DataFrame:
    """`columns` of features.market for the one-minute `bars_1m` rows of any number of trading days, each day on its
    own: what `market_features(day_rows, session)` gives every day without a history (windows start at the open),
    in one pass and computing only `columns` (the envs' synthetic and array markets, many days at a time).

    Returns symbol, ts, trading_day and `columns`, sorted by symbol and ts. The turbulence and daily columns read
    the whole session grid or earlier sessions and are refused: `turbulence.turbulence_from_closes` takes days of
    minute closes at once; `market_features_days` computes days with their history.
    """
    rows = tick_rows(bars_1m).drop("_minutes")
    # Each symbol-day its own series, so no window reaches into the day before.
    alone = rows.with_columns(_symbol=pl.col("symbol"), symbol=pl.format("{}|{}", "symbol", "trading_day"))
    frame = _features(alone, 1)
    computed = set(frame.collect_schema().names()) & set(market_feature_names())
    refused = [c for c in columns if c not in computed]
    if refused:
        raise ValueError(
            f"{refused} are not features.market columns computed within one day's bars; choose catalog names "
            "(docs/FEATURES.md) other than the turbulence and daily ones"
        )
    # Selecting the chosen columns before collecting lets polars skip the others.
    chosen = frame.select(pl.col("_symbol").alias("symbol"), "ts", "trading_day", *columns).collect()
    return _null_where_not_finite(chosen.sort("symbol", "ts"), columns)
