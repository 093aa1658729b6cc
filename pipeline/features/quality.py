"""Data-quality rules for the feature tables: the session's minutes are all there, nothing is infinite, each
feature is null no more often than its warm-up explains, and which columns carry data at all (`column_fill`).

The null allowance comes from the catalog's windows (`Window.warmup`, in its unit), per symbol-day of one-minute
rows, given how many sessions right before the day the warehouse holds for that symbol:

- trading-days windows (`log_return_5d`, `drawdown_60d`, ...): the whole day may be null while fewer than `warmup`
  consecutive earlier sessions have a close; none once they have.
- minutes and bars windows: the first `warmup` rows (in one-minute bars) may be null when the session before has no
  bars (the window cannot reach back into it); none otherwise. `SESSION_RESET_FEATURES` restart at every open, so
  they may be null for their first `warmup` rows every day.
- everything else (keys, values at ts, one-bar values, open-to-ts values): never null.

Bar-only rows (raw.bars intervals other than one minute) are not held to this: the tick-only features are null on
them by design, and the catalog does not say which features those are.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date

import polars as pl

from pipeline.contract.calendar import TradingSession
from pipeline.features.catalog import MARKET, Feature, features_of
from pipeline.features.lookback import row_lookback_sessions
from pipeline.features.windows import BAR_COUNT, MINUTES, TRADING_DAYS

FILLED, CONSTANT, EMPTY = "filled", "constant", "empty"
"""What a column holds over some rows: values that change, one value per symbol, or nothing (`column_fill`)."""
# The one-minute rows of features.market; bar-only symbols carry their raw.bars interval instead.
MINUTE_INTERVAL = "1m"
# Minute features whose window restarts at each open (the catalog's formula says so), so they warm up daily.
SESSION_RESET_FEATURES: frozenset[str] = frozenset({"turbulence_index"})


def missing_minutes(frame: pl.DataFrame, sessions: Sequence[TradingSession]) -> pl.DataFrame:
    """Per (trading_day, symbol) of `frame` whose one-minute rows do not cover its session exactly once.

    `frame` has symbol, ts (minute end) and trading_day; the session (early closes included) says which minute
    ends exist: open + 1 min, ..., close. Columns: trading_day, symbol, expected, present, missing, duplicated,
    first_missing (the earliest absent minute end, null when none is absent). Empty when every minute is there.
    """
    schema = {"trading_day": pl.Date, "symbol": pl.Utf8, "expected": pl.Int64, "present": pl.Int64,
              "missing": pl.Int64, "duplicated": pl.Int64, "first_missing": pl.Datetime("us", "UTC")}
    rows = []
    by_day = {s.trading_day: s for s in sessions}
    for (day, symbol), part in frame.partition_by("trading_day", "symbol", as_dict=True).items():
        session = by_day[day]
        grid = pl.datetime_range(session.open, session.close, interval="1m", time_zone="UTC", eager=True)[1:]
        stamps = part["ts"].dt.convert_time_zone("UTC").dt.cast_time_unit("us")
        absent = grid.filter(~grid.is_in(stamps.implode()))
        duplicated = stamps.len() - stamps.n_unique()
        if absent.len() or duplicated:
            rows.append({"trading_day": day, "symbol": symbol, "expected": grid.len(), "present": stamps.n_unique(),
                         "missing": absent.len(), "duplicated": duplicated,
                         "first_missing": absent.min() if absent.len() else None})
    return pl.DataFrame(rows, schema=schema).sort("trading_day", "symbol")


def infinite_counts(frame: pl.DataFrame) -> dict[str, int]:
    """{column: number of +-inf values} of every float column that has any."""
    floats = [c for c, dtype in frame.schema.items() if dtype.is_float()]
    if not floats or frame.is_empty():
        return {}
    counts = frame.select(pl.col(c).is_infinite().sum() for c in floats).row(0, named=True)
    return {c: int(n) for c, n in counts.items() if n}


def null_allowance(feature: Feature, day_rows: int, earlier_sessions: int, earlier_minute_sessions: int) -> int:
    """Most nulls `feature` may have in one symbol-day of `day_rows` one-minute rows (see the module docstring).

    `earlier_sessions`: consecutive sessions right before the day with a close of the symbol (daily windows);
    `earlier_minute_sessions`: the same counted over its one-minute bars (minute and bar windows).
    """
    window = feature.window
    if window.unit == TRADING_DAYS:
        return day_rows if earlier_sessions < window.warmup else 0
    if window.unit in (MINUTES, BAR_COUNT):
        resets = feature.name in SESSION_RESET_FEATURES
        reaches_back = earlier_minute_sessions >= row_lookback_sessions(1)
        return min(day_rows, window.rows(1)) if resets or not reaches_back else 0
    return 0


@dataclass(frozen=True)
class ExcessNulls:
    """A feature null more often on one symbol-day than its warm-up explains."""

    trading_day: date
    symbol: str
    column: str
    nulls: int
    allowed: int
    rows: int


def excess_nulls(
    frame: pl.DataFrame,
    earlier_sessions: Mapping[tuple[date, str], int],
    earlier_minute_sessions: Mapping[tuple[date, str], int],
) -> list[ExcessNulls]:
    """The (day, symbol, feature) of `frame`'s one-minute features.market rows whose nulls exceed the allowance.

    The two maps give, per (trading_day, symbol), the consecutive earlier sessions with a close and with
    one-minute bars (missing keys count as 0).
    """
    minute_rows = frame.filter(pl.col("bar_interval") == MINUTE_INTERVAL)
    features = [f for f in features_of(MARKET) if f.group != "key" and f.name in frame.columns]
    if minute_rows.is_empty():
        return []
    counts = minute_rows.group_by("trading_day", "symbol").agg(
        pl.len().alias("_rows"), *(pl.col(f.name).null_count() for f in features)
    )
    excess = []
    for row in counts.sort("trading_day", "symbol").iter_rows(named=True):
        key = (row["trading_day"], row["symbol"])
        for feature in features:
            allowed = null_allowance(feature, row["_rows"], earlier_sessions.get(key, 0),
                                     earlier_minute_sessions.get(key, 0))
            if row[feature.name] > allowed:
                excess.append(ExcessNulls(*key, feature.name, row[feature.name], allowed, row["_rows"]))
    return excess


def consecutive_earlier_sessions(
    days: Sequence[date], earlier: Mapping[date, Sequence[date]], held: pl.DataFrame
) -> dict[tuple[date, str], int]:
    """Per (day, symbol): how many of the sessions right before `day` (`earlier[day]`, oldest first) the symbol has
    rows in, counting back from the latest until the first gap. `held` has (symbol, trading_day) pairs."""
    by_symbol: dict[str, set[date]] = {}
    for symbol, day in held.select("symbol", "trading_day").unique().iter_rows():
        by_symbol.setdefault(symbol, set()).add(day)
    counts = {}
    for day in days:
        for symbol, held_days in by_symbol.items():
            run = 0
            for previous in reversed(earlier[day]):
                if previous not in held_days:
                    break
                run += 1
            counts[(day, symbol)] = run
    return counts


def column_fill(frame: pl.DataFrame, columns: Sequence[str]) -> dict[str, str]:
    """Whether each column of `frame` (one row per symbol and bar) carries data: EMPTY where it is null on every
    row, CONSTANT where each symbol has one value on all its non-null rows (nothing changes over time: e.g.
    session_return, 0.0 on every daily bar, whose session is one bar), else FILLED."""
    if frame.is_empty():
        return dict.fromkeys(columns, EMPTY)
    distinct = frame.group_by("symbol").agg(pl.col(c).drop_nulls().n_unique() for c in columns)
    most = distinct.select(pl.col(c).max() for c in columns).row(0, named=True)
    return {c: EMPTY if most[c] == 0 else CONSTANT if most[c] == 1 else FILLED for c in columns}
