"""Trading-day partitions: one partition per XNYS session, keyed by the session date ("%Y-%m-%d").

A weekday cron in New York time with the exchange holidays as `exclusions`, so partition keys are exactly
`pipeline.contract.calendar.trading_days`. Early closes are still one partition each: the session's own
open/close comes from the calendar when the assets fetch a day.
"""

from __future__ import annotations

import os
from datetime import date, datetime, timedelta

import dagster as dg

from pipeline.contract.calendar import CALENDAR_END, NY_TZ, holidays

DEFAULT_PARTITIONS_START = "2024-01-02"
PARTITION_KEY_FORMAT = "%Y-%m-%d"


def partitions_start_from_env() -> str:
    """The first partition day: PIPELINE_PARTITIONS_START, else 2024-01-02 (read when definitions are built)."""
    raw = os.environ.get("PIPELINE_PARTITIONS_START", DEFAULT_PARTITIONS_START)
    try:
        return date.fromisoformat(raw).isoformat()
    except ValueError as exc:
        raise ValueError(
            f"PIPELINE_PARTITIONS_START={raw!r} is not a date; set it to an ISO date like 2024-01-02"
        ) from exc


def trading_day_partitions(start: str = DEFAULT_PARTITIONS_START) -> dg.TimeWindowPartitionsDefinition:
    """Daily partitions on XNYS sessions from `start` through the calendar's last supported day.

    end_offset=1 makes today's partition exist during the day, so the after-close schedule can target it.
    """
    first = date.fromisoformat(start)
    excluded = [datetime.combine(day, datetime.min.time()) for day in holidays(first, CALENDAR_END)]
    return dg.TimeWindowPartitionsDefinition(
        cron_schedule="0 0 * * 1-5",
        start=first.isoformat(),
        end=(CALENDAR_END + timedelta(days=1)).isoformat(),
        fmt=PARTITION_KEY_FORMAT,
        timezone=NY_TZ,
        end_offset=1,
        exclusions=excluded,
    )
