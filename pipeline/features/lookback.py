"""How far features.market reaches into earlier trading days, and the earlier days' data a day is computed with.

The reach is derived from the catalog's windows, so a new or longer window moves it: `LOOKBACK_TRADING_DAYS` is
what the assets read from earlier partitions, `row_lookback_sessions` how many earlier sessions of bars the bar
and minute windows of one interval need. `MarketHistory` carries those days into `market_features`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date

import polars as pl

from pipeline.contract.calendar import SHORTEST_SESSION_MINUTES, TradingSession
from pipeline.features.catalog import MARKET, features_of
from pipeline.features.daily import CLOSES_SCHEMA
from pipeline.features.rows import BarStamp, bar_rows, daily_closes, tick_rows
from pipeline.features.windows import BAR_COUNT, DAY_MINUTES, MINUTES, TRADING_DAYS


def row_lookback_sessions(interval_minutes: int) -> int:
    """Earlier sessions whose bars the fitting minute and bar windows of this interval reach into (recursive
    averages as far as they settle: `Window.settle`)."""
    rows = max(
        (f.window.lookback_rows(interval_minutes) for f in features_of(MARKET)
         if f.window.unit in (MINUTES, BAR_COUNT) and f.window.fits(interval_minutes)),
        default=0,
    )
    per_session = 1 if interval_minutes >= DAY_MINUTES else max(1, SHORTEST_SESSION_MINUTES // interval_minutes)
    return math.ceil(rows / per_session)


DAILY_LOOKBACK_SESSIONS = max(f.window.warmup for f in features_of(MARKET) if f.window.unit == TRADING_DAYS)
# The most earlier trading days any feature of any interval needs: the assets' partition mapping offset.
LOOKBACK_TRADING_DAYS = max(DAILY_LOOKBACK_SESSIONS, row_lookback_sessions(DAY_MINUTES))


def _empty_closes() -> pl.DataFrame:
    return pl.DataFrame(schema=CLOSES_SCHEMA)


@dataclass(frozen=True)
class MarketHistory:
    """The sessions before a day and what they hold; nothing in it may be from that day or later.

    `bars_1m` and `bars` need every column only for the last `row_lookback_sessions(interval)` sessions (more is
    fine); `closes` (symbol, trading_day, close) are the daily closes of all of `sessions` (see `daily_closes`).
    """

    sessions: tuple[TradingSession, ...]
    bars_1m: pl.DataFrame
    bars: pl.DataFrame | None = None
    closes: pl.DataFrame = field(default_factory=_empty_closes)

    @property
    def days(self) -> list[date]:
        return [s.trading_day for s in self.sessions]

    def check_before(self, session: TradingSession) -> None:
        """Refuses a history that is not strictly earlier than `session`, oldest first."""
        days = self.days
        if days != sorted(set(days)) or (days and days[-1] >= session.trading_day):
            raise ValueError(
                f"history sessions {days[:1]}..{days[-1:]} must be distinct, oldest first and before "
                f"{session.trading_day}: a day's features may only look back"
            )


def session_closes(sessions: Sequence[TradingSession], bars_1m: pl.DataFrame, bars: pl.DataFrame | None = None,
                   bar_ts: BarStamp = "start") -> pl.DataFrame:
    """Daily closes (symbol, trading_day, close) from the features.bars_1m and raw.bars rows of `sessions`."""
    ticks = tick_rows(bars_1m)
    return daily_closes(ticks, bar_rows(bars, sessions, bar_ts) if bars is not None and bars.height else ticks.clear())


def market_history(sessions: Sequence[TradingSession], bars_1m: pl.DataFrame, bars: pl.DataFrame | None = None,
                   bar_ts: BarStamp = "start") -> MarketHistory:
    """A `MarketHistory` from the full rows of earlier sessions, with their daily closes taken from those rows."""
    return MarketHistory(tuple(sessions), bars_1m, bars, session_closes(sessions, bars_1m, bars, bar_ts))
