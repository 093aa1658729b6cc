"""The XNYS trading calendar: sessions, holidays, early closes and the error for a non-session."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest

from pipeline.contract.calendar import (
    CALENDAR_END,
    CALENDAR_START,
    NY_TZ,
    SHORTEST_SESSION_MINUTES,
    earlier_trading_days,
    expiry_close,
    holidays,
    is_trading_day,
    previous_trading_day,
    trading_days,
    trading_session,
    xnys,
)


def test_trading_days_skip_weekends_and_holidays() -> None:
    days = trading_days(date(2024, 7, 1), date(2024, 7, 9))
    assert days == [
        date(2024, 7, 1), date(2024, 7, 2), date(2024, 7, 3), date(2024, 7, 5), date(2024, 7, 8), date(2024, 7, 9)
    ]
    assert all(d.weekday() < 5 for d in trading_days(date(2024, 1, 1), date(2024, 12, 31)))
    assert len(trading_days("2024-01-01", "2024-12-31")) == 252


def test_is_trading_day() -> None:
    assert is_trading_day(date(2024, 7, 5))
    assert not is_trading_day(date(2024, 7, 4))
    assert not is_trading_day(date(2024, 7, 6))  # Saturday
    assert not is_trading_day(date(1990, 1, 2))  # outside the supported span


def test_holidays_are_weekdays_without_a_session() -> None:
    hol = holidays(date(2024, 1, 1), date(2024, 12, 31))
    assert date(2024, 7, 4) in hol and date(2024, 12, 25) in hol and date(2024, 11, 28) in hol
    assert date(2024, 7, 5) not in hol
    assert all(d.weekday() < 5 for d in hol)
    assert len(hol) == 10


def test_regular_and_early_close_sessions_in_utc() -> None:
    regular = trading_session(date(2024, 7, 5))
    assert regular.open == datetime(2024, 7, 5, 13, 30, tzinfo=UTC)
    assert regular.close == datetime(2024, 7, 5, 20, 0, tzinfo=UTC)
    assert regular.minutes == 390
    early = trading_session(date(2024, 11, 29))
    assert early.minutes == 210
    assert early.close.astimezone(ZoneInfo(NY_TZ)).hour == 13


def test_non_session_raises_with_the_day_named() -> None:
    with pytest.raises(ValueError, match=r"2024-07-04.*not an XNYS session"):
        trading_session(date(2024, 7, 4))
    with pytest.raises(ValueError, match="after end"):
        trading_days(date(2024, 7, 9), date(2024, 7, 1))


def test_earlier_trading_days_are_the_sessions_before_the_day() -> None:
    assert earlier_trading_days(date(2024, 7, 8), 3) == [date(2024, 7, 2), date(2024, 7, 3), date(2024, 7, 5)]
    assert earlier_trading_days(date(2024, 7, 6), 1) == [date(2024, 7, 5)]  # a Saturday counts back too
    assert earlier_trading_days(date(2024, 7, 8), 0) == []
    assert earlier_trading_days(CALENDAR_START, 5) == []
    assert len(earlier_trading_days(date(2024, 12, 31), 252)) == 252
    assert previous_trading_day(date(2024, 7, 5)) == date(2024, 7, 3)
    with pytest.raises(ValueError, match="no XNYS session before"):
        previous_trading_day(CALENDAR_START)


def test_expiry_close_is_the_session_close_early_closes_and_holidays_included() -> None:
    new_york = ZoneInfo(NY_TZ)
    assert expiry_close(date(2024, 7, 12)) == datetime(2024, 7, 12, 16, tzinfo=new_york)
    assert expiry_close("2024-11-29") == datetime(2024, 11, 29, 13, tzinfo=new_york)  # the day after Thanksgiving
    # Good Friday 2024 does not trade: its expiry settles at Thursday's close.
    assert expiry_close(date(2024, 3, 29)) == datetime(2024, 3, 28, 16, tzinfo=new_york)
    with pytest.raises(ValueError, match="outside the supported calendar span"):
        expiry_close(date(CALENDAR_END.year + 1, 1, 16))


def test_no_session_is_shorter_than_the_shortest() -> None:
    opens, closes = xnys().opens, xnys().closes
    assert int(((closes - opens).dt.total_seconds() // 60).min()) == SHORTEST_SESSION_MINUTES
