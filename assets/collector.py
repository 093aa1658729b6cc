"""The option-chain collector as Dagster sees it: a job that snapshots the brokers' live chains, and its schedule.

The schedule fires every `minutes` on weekdays from 09:00 to 16:59 New York time and asks the XNYS calendar whether
that minute is a collection slot (`pipeline.sources.option_collector.collection_slots`): holidays, the time before the
first slot and after an early close are skipped with the reason. Each run writes one Parquet file per underlying into
<lake>/landing/option_snapshots/, which the landing sensor (and the day's ingest) turn into raw.option_snapshots.
A snapshot that could not be taken is a gap: logged, never filled, and the run fails so the gap shows in the UI.
"""

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import dagster as dg
from pydantic import Field

from pipeline.contract.calendar import NY_TZ
from pipeline.sources.option_collector import collect_snapshot, collection_slots, due_slot
from pipeline.sources.settings import check_option_snapshot_minutes
from resources.sources import MarketDataResource
from resources.warehouse import WarehouseResource

COLLECTOR_JOB_NAME = "collect_option_chains"
COLLECTOR_SCHEDULE_NAME = "option_chain_collector"
_OP_NAME = "collect_option_chain_snapshot"


class CollectorConfig(dg.Config):
    slot: str | None = Field(
        default=None,
        description="The collection slot (ISO time) this run snapshots; the schedule sets it. Unset: the slot now "
        "falls in, if the run starts within half an interval of it.",
    )
    broker: str | None = Field(
        default=None, description="alpaca | ibkr; unset: the market_data resource's source (PIPELINE_SOURCE)."
    )
    underlyings: list[str] | None = Field(
        default=None, description="Underlyings whose chains are snapshot; unset: the market_data universe."
    )


@dg.op(name=_OP_NAME, description="Snapshots each underlying's live option chain into landing/option_snapshots/.")
def collect_option_chain_snapshot(
    context: dg.OpExecutionContext,
    config: CollectorConfig,
    market_data: MarketDataResource,
    warehouse: WarehouseResource,
) -> dg.Output[int]:
    settings = market_data.settings(source=config.broker)
    minutes = settings.option_snapshot_minutes
    now = datetime.now(UTC)
    slot = datetime.fromisoformat(config.slot).astimezone(UTC) if config.slot else due_slot(now, minutes)
    if slot is None:
        raise dg.Failure(
            f"{now.isoformat(timespec='seconds')} is not within half an interval of a collection slot (every "
            f"{minutes} min of an XNYS session); nothing was collected. Pass `slot` to collect for a given slot."
        )
    underlyings = config.underlyings or settings.universe()
    lake = warehouse.lake()
    outcomes = collect_snapshot(
        market_data.chain_source(config.broker), underlyings, slot, minutes, settings.landing_path(lake), lake
    )
    written = [o for o in outcomes if not o.is_gap]
    gaps = {o.underlying: o.gap_reason for o in outcomes if o.is_gap}
    metadata = {
        "slot": slot.isoformat(),
        "contracts": sum(o.rows for o in written),
        "files": dg.MetadataValue.json([str(o.path) for o in written]),
        "gaps": dg.MetadataValue.json(gaps),
    }
    if gaps:
        # The files that were written stay: only the underlyings that failed have a gap in this slot.
        raise dg.Failure(
            f"missed the {slot.isoformat()} snapshot of {sorted(gaps)} (logged in <lake>/logs/option_snapshot_"
            f"gaps.log, left as a gap): {gaps}",
            metadata=metadata,
        )
    context.log.info(f"slot {slot.isoformat()}: {metadata['contracts']} contracts of {len(written)} underlyings")
    return dg.Output(len(written), metadata=metadata)


@dg.job(
    name=COLLECTOR_JOB_NAME,
    description="One slot of the live option-chain collector: every configured underlying's current chain, "
    "written to landing/option_snapshots/ stamped with its fetch time.",
    tags={"pipeline/trigger": "option_chain_collector"},
)
def collect_option_chains() -> None:
    collect_option_chain_snapshot()


def collector_cron(minutes: int) -> str:
    """Every `minutes` in the New York hours that can hold a slot (09:30 + minutes through 15:59)."""
    return f"*/{check_option_snapshot_minutes(minutes)} 9-15 * * 1-5"


def request_for_slot(scheduled: datetime, minutes: int) -> dg.RunRequest | dg.SkipReason:
    """The run of the slot at `scheduled`, or a skip saying why this tick is not one (holiday, outside the session)."""
    local = scheduled.astimezone(ZoneInfo(NY_TZ))
    slots = collection_slots(local.date(), minutes)
    if not slots:
        return dg.SkipReason(f"{local.date()} is not an XNYS trading day")
    slot = scheduled.astimezone(UTC)
    if slot not in slots:
        first, last = (s.astimezone(ZoneInfo(NY_TZ)).strftime("%H:%M") for s in (slots[0], slots[-1]))
        return dg.SkipReason(f"{local:%Y-%m-%d %H:%M} is not a collection slot (today's run from {first} to {last})")
    return dg.RunRequest(
        run_key=f"option_chains:{slot.isoformat()}",
        run_config={"ops": {_OP_NAME: {"config": {"slot": slot.isoformat()}}}},
        tags={"pipeline/slot": slot.isoformat()},
    )


def build_collector_schedule(minutes: int) -> dg.ScheduleDefinition:
    @dg.schedule(
        name=COLLECTOR_SCHEDULE_NAME,
        job=collect_option_chains,
        cron_schedule=collector_cron(minutes),
        execution_timezone=NY_TZ,
        description=f"Every {minutes} min of the XNYS session (early closes respected), snapshots the live option "
        "chains of the universe from the broker (PIPELINE_SOURCE alpaca or ibkr) into landing/option_snapshots/. "
        "Off by default. Turn it on in the UI (Automation, then the toggle next to option_chain_collector) or with "
        "`dagster schedule start option_chain_collector -m pipeline.definitions`; it runs only while `dagster dev` "
        "or `dagster-daemon run` is running. Turn on landing_files_sensor too, so the snapshots are ingested.",
    )
    def option_chain_collector(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        return request_for_slot(context.scheduled_execution_time, minutes)

    return option_chain_collector
