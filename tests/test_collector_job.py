"""The collector's schedule and job in Dagster: XNYS slots, files into landing, gaps, and the ingest that follows."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import dagster as dg
import pytest

from pipeline.collector import COLLECTOR_SCHEDULE_NAME, build_collector_schedule, collector_cron
from pipeline.definitions import build_definitions

NY = ZoneInfo("America/New_York")


@pytest.fixture(scope="module")
def defs() -> dg.Definitions:
    return build_definitions()


def _tick(defs: dg.Definitions, when: datetime) -> dg.SensorResult:
    context = dg.build_schedule_context(scheduled_execution_time=when, repository_def=defs.get_repository_def())
    return defs.get_schedule_def(COLLECTOR_SCHEDULE_NAME).evaluate_tick(context)


def test_the_schedule_fires_on_the_session_slots_only(defs: dg.Definitions) -> None:
    schedule = defs.get_schedule_def(COLLECTOR_SCHEDULE_NAME)
    assert schedule.cron_schedule == "*/15 9-15 * * 1-5" and schedule.execution_timezone == "America/New_York"
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    (request,) = _tick(defs, datetime(2024, 7, 5, 10, 0, tzinfo=NY)).run_requests
    slot = "2024-07-05T14:00:00+00:00"
    assert request.run_key == f"option_chains:{slot}"
    assert request.run_config["ops"]["collect_option_chain_snapshot"]["config"]["slot"] == slot
    skipped = {
        datetime(2024, 7, 4, 10, 0, tzinfo=NY): "not an XNYS trading day",  # Independence Day
        datetime(2024, 7, 5, 9, 30, tzinfo=NY): "not a collection slot",  # the open: first slot is 09:45
        datetime(2024, 11, 29, 13, 15, tzinfo=NY): "to 12:45",  # after the 13:00 early close
    }
    for when, why in skipped.items():
        result = _tick(defs, when)
        assert not result.run_requests and why in result.skip_message, (when, result.skip_message)
    assert _tick(defs, datetime(2024, 11, 29, 12, 45, tzinfo=NY)).run_requests


def test_another_interval_moves_the_cron_and_the_slots() -> None:
    schedule = build_collector_schedule(5)
    assert schedule.cron_schedule == collector_cron(5) == "*/5 9-15 * * 1-5"
    slot = datetime(2024, 7, 5, 9, 35, tzinfo=NY)
    (request,) = schedule.evaluate_tick(dg.build_schedule_context(scheduled_execution_time=slot)).run_requests
    assert request.tags["pipeline/slot"] == slot.astimezone(UTC).isoformat()
    with pytest.raises(ValueError, match="must divide 30"):
        collector_cron(20)
