"""The daily schedule: after the close of each trading day, run the daily job for that day's partition.

The job is an asset selection: ingest -> features -> training -> evaluation -> deployment for the trading day that
just closed. A stage joins it by adding its group to DAILY_GROUPS, not by writing a new schedule. The on-demand
hyperparameter search has a group of its own (`search`), so it is in no daily group.
"""

from collections.abc import Sequence
from typing import Any
from zoneinfo import ZoneInfo

import dagster as dg

from assets.deployment import DEPLOYMENT_GROUP
from assets.evaluation import EVALUATION_GROUP
from assets.features import FEATURES_GROUP
from assets.ingest import INGEST_GROUP
from assets.training import TRAINING_GROUP
from pipeline.contract.calendar import NY_TZ, is_trading_day

# define_asset_job's return type is not exported by dagster; name it here once.
DailyJob = Any

DAILY_JOB_NAME = "daily_pipeline"
DAILY_GROUPS: tuple[str, ...] = (INGEST_GROUP, FEATURES_GROUP, TRAINING_GROUP, EVALUATION_GROUP, DEPLOYMENT_GROUP)
# 17:30 New York: after the 16:00 close (and after early closes) with time for vendors to settle the day.
AFTER_CLOSE_CRON = "30 17 * * 1-5"


def daily_selection(groups: Sequence[str] = DAILY_GROUPS) -> dg.AssetSelection:
    return dg.AssetSelection.groups(*groups)


def build_daily_job(groups: Sequence[str] = DAILY_GROUPS) -> DailyJob:
    """The job over the daily groups; its trading-day partitions come from the selected assets."""
    return dg.define_asset_job(
        DAILY_JOB_NAME,
        selection=daily_selection(groups),
        description="One trading day through the pipeline: " + " -> ".join(groups) + ".",
    )


def build_daily_schedule(job: DailyJob) -> dg.ScheduleDefinition:
    @dg.schedule(
        name="daily_after_close",
        job=job,
        cron_schedule=AFTER_CLOSE_CRON,
        execution_timezone=NY_TZ,
        description="After the close, materializes the daily job for the trading day that just ended. Off by "
        "default. Turn it on in the UI (Automation, then the toggle next to daily_after_close) or with `dagster "
        "schedule start daily_after_close -m pipeline.definitions`; it runs only while `dagster dev` or "
        "`dagster-daemon run` is running.",
    )
    def daily_after_close(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        day = context.scheduled_execution_time.astimezone(ZoneInfo(NY_TZ)).date()
        return request_for_day(day.isoformat())

    return daily_after_close


def request_for_day(day: str) -> dg.RunRequest | dg.SkipReason:
    """The run for one day's partition, or a skip on exchange holidays (the cron only knows weekdays)."""
    if not is_trading_day(day):
        return dg.SkipReason(f"{day} is not an XNYS trading day (exchange holiday)")
    return dg.RunRequest(run_key=f"daily:{day}", partition_key=day)
