"""The NYSE trading calendar (exchange_calendars XNYS): trading days, holidays and session open/close in UTC.

Partitions, sources and the synthetic market all ask this module which days trade and when, so early closes
(e.g. the day after Thanksgiving closes at 13:00 New York time) are handled in one place. The calendar object is
built lazily on first use and cached; importing this module does no I/O.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache

import exchange_calendars as xcals
import pandas as pd

NY_TZ = "America/New_York"
EXCHANGE = "XNYS"
SHORTEST_SESSION_MINUTES = 210
"""An early close (09:30-13:00 New York) is the shortest XNYS session: the fewest minute bars a session holds."""
# A fixed span keeps answers independent of today's date (the library's default window moves with the clock).
CALENDAR_START = date(2000, 1, 3)
CALENDAR_END = date(2030, 12, 31)
REGULAR_SESSION_MINUTES = 390
"""Minutes of a regular session (09:30-16:00 New York): the minute bars of a full day."""
TRADING_DAYS_PER_YEAR = 252
"""Sessions in a year, for annualizing."""


@dataclass(frozen=True)
class TradingSession:
    """One exchange session: the trading day and its open/close as UTC datetimes (early closes included)."""

    trading_day: date
    open: datetime
    close: datetime

    @property
    def minutes(self) -> int:
        return int((self.close - self.open).total_seconds() // 60)


@lru_cache(maxsize=1)
def xnys() -> xcals.ExchangeCalendar:
    """The cached XNYS calendar covering CALENDAR_START..CALENDAR_END."""
    # exchange_calendars trips a pandas deprecation warning inside its own construction; nothing for us to fix.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Series.values returning an ndarray")
        return xcals.get_calendar(EXCHANGE, start=CALENDAR_START.isoformat(), end=CALENDAR_END.isoformat())


def _as_date(day: date | datetime | str) -> date:
    if isinstance(day, datetime):
        return day.date()
    if isinstance(day, date):
        return day
    try:
        return date.fromisoformat(str(day))
    except ValueError as exc:
        raise ValueError(f"{day!r} is not a date; pass a datetime.date or an ISO string like '2024-07-05'") from exc


def _check_span(start: date, end: date) -> None:
    if start > end:
        raise ValueError(f"start {start} is after end {end}; pass start <= end")
    if start < CALENDAR_START or end > CALENDAR_END:
        raise ValueError(
            f"{start}..{end} is outside the supported calendar span {CALENDAR_START}..{CALENDAR_END}; "
            "pick dates inside it"
        )


def trading_days(start: date | str, end: date | str) -> list[date]:
    """The XNYS sessions from start to end, both inclusive, in order."""
    start, end = _as_date(start), _as_date(end)
    _check_span(start, end)
    sessions = xnys().sessions_in_range(pd.Timestamp(start), pd.Timestamp(end))
    return [ts.date() for ts in sessions]


def is_trading_day(day: date | str) -> bool:
    """True when the day is an XNYS session (False for weekends, holidays and days outside the span)."""
    day = _as_date(day)
    if not CALENDAR_START <= day <= CALENDAR_END:
        return False
    return bool(xnys().is_session(pd.Timestamp(day)))


def earlier_trading_days(day: date | str, count: int) -> list[date]:
    """The `count` XNYS sessions before `day` (whether or not `day` itself is one), oldest first; fewer near the
    calendar's first day."""
    day = _as_date(day)
    # Two calendar days per session, plus a fortnight of holidays, always hold `count` sessions (the longest XNYS
    # closure since 2000 was four weekdays).
    start = max(CALENDAR_START, day - timedelta(days=2 * count + 14))
    last = day - timedelta(days=1)
    return trading_days(start, last)[-count:] if count > 0 and last >= start else []


def previous_trading_day(day: date | str) -> date:
    """The XNYS session before `day` (whether or not `day` itself is one)."""
    earlier = earlier_trading_days(day, 1)
    if not earlier:
        raise ValueError(f"no XNYS session before {day} in the supported span from {CALENDAR_START}")
    return earlier[0]


def holidays(start: date | str, end: date | str) -> list[date]:
    """Weekdays from start to end (inclusive) on which XNYS does not trade, e.g. 2024-07-04 and 2024-12-25."""
    start, end = _as_date(start), _as_date(end)
    _check_span(start, end)
    sessions = set(trading_days(start, end))
    days = (start + timedelta(days=i) for i in range((end - start).days + 1))
    return [d for d in days if d.weekday() < 5 and d not in sessions]


def trading_session(day: date | str) -> TradingSession:
    """The session of one trading day with UTC open and close (early closes included).

    Raises ValueError naming the day when it is not an XNYS session.
    """
    day = _as_date(day)
    if not is_trading_day(day):
        raise ValueError(
            f"{day} ({day.strftime('%A')}) is not an XNYS session (weekend, exchange holiday, or outside "
            f"{CALENDAR_START}..{CALENDAR_END}); use pipeline.contract.calendar.trading_days() to pick one"
        )
    open_ts, close_ts = xnys().session_open_close(pd.Timestamp(day))
    return TradingSession(
        trading_day=day,
        open=open_ts.to_pydatetime().astimezone(UTC),
        close=close_ts.to_pydatetime().astimezone(UTC),
    )


@lru_cache(maxsize=4096)
def expiry_close(expiry: date | str) -> datetime:
    """When an option expiring on `expiry` stops trading and settles (UTC): the close of that XNYS session, early
    closes included (2024-11-29 closes at 13:00 New York). An expiry on a day that does not trade settles at the
    close of the session before it, as OCC moves a holiday expiry to the business day before."""
    expiry = _as_date(expiry)
    return trading_session(expiry if is_trading_day(expiry) else previous_trading_day(expiry)).close


def snapshot_times(session: TradingSession, minutes: int) -> list[datetime]:
    """Option-chain snapshot times of a session (UTC): every `minutes` after the open, up to and including the close.

    The first is `minutes` after the open (a chain at the opening print is mostly stale quotes), the last at or before
    the close, early closes included. The synthetic market, the live collector and the Alpaca reconstruction all
    snapshot on this grid.
    """
    if minutes < 1:
        raise ValueError(f"snapshot minutes must be >= 1, got {minutes}")
    return [session.open + timedelta(minutes=m) for m in range(minutes, session.minutes + 1, minutes)]
