"""The code location's sensors: landing files trigger ingest runs, and a failed run leaves a one-line summary.

Landing: new or changed files in <lake>/landing/<table>/ (and its <YYYY-MM-DD>/ day folders) trigger ingest runs
(source=files). The cursor is the
JSON map {relative path: [mtime_ns, size]} of the files already seen. For every new or changed file the sensor
reads its `ts` column, and requests one run per trading day it covers, selecting only the raw tables that have new
files that day (so a day of trades never blanks that day's quotes) plus the features they feed. Rows dated on a
weekend or holiday count for the session before it, whose ingest quarantines them (`file_source.filing_day`).

Run failures: every failed run of the location gets one line (which run, job and partitions, which steps failed
with the first line of their error, where to look) in the sensor's log and in <lake>/logs/run_failures.log.
"""

import hashlib
import json
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, date, datetime
from pathlib import Path

import dagster as dg
from dagster_shared.error import SerializableErrorInfo

from assets.features import BARS_1M_KEY, FEATURE_KEYS, MARKET_KEY, OPTIONS_KEY
from pipeline.contract.schemas import RAW_TABLES
from pipeline.sources.base import SourceError
from pipeline.sources.file_source import (
    day_folder_date,
    day_folder_files,
    file_trading_days,
    filing_day,
    top_level_files,
)
from resources.sources import MarketDataResource
from resources.warehouse import WarehouseResource

FILES_RUN_CONFIG_SOURCE = "files"
LANDING_SENSOR_NAME = "landing_files_sensor"
RUN_FAILURE_SENSOR_NAME = "run_failure_summary"
# Under the data lake, so failures are visible next to the data they concern, without the UI.
RUN_FAILURES_LOG = Path("logs") / "run_failures.log"
# How to switch a sensor on; it is off until someone does (the daemon evaluates only running sensors).
TURN_ON = (
    "Off by default. Turn it on in the UI (Automation, then the toggle next to {name}) or with "
    "`dagster sensor start {name} -m pipeline.definitions`; it is evaluated only while `dagster dev` or "
    "`dagster-daemon run` is running."
)

FileState = dict[str, list[int]]


def scan_landing(landing_dir: Path) -> FileState:
    """{"<table>/<file>": [mtime_ns, size]} for every landing file of a known raw table, and
    {"<table>/<YYYY-MM-DD>/<file>": ...} for the files of its day folders."""
    state: FileState = {}
    for table in RAW_TABLES:
        folder = landing_dir / table
        if not folder.is_dir():
            continue
        paths = top_level_files(landing_dir, table)
        for sub in sorted(folder.iterdir()):
            if (day := day_folder_date(sub)) is not None:
                paths += day_folder_files(landing_dir, table, day)
        for path in paths:
            stat = path.stat()
            state[path.relative_to(landing_dir).as_posix()] = [stat.st_mtime_ns, stat.st_size]
    return state


def _covered_days(landing: Path, name: str) -> set[date]:
    """The trading days whose ingests read one changed landing file: its day folder's, else those of its rows' ts,
    a day without a session counting for the session before it (whose ingest quarantines its rows)."""
    table, *folders, _ = name.split("/")
    days = {date.fromisoformat(folders[0])} if folders else file_trading_days(table, landing / name)
    return {filing_day(day) for day in days}


def changed_files(previous: FileState, current: FileState) -> list[str]:
    return sorted(name for name, stat in current.items() if previous.get(name) != stat)


def build_landing_sensor(
    ingest_and_features: dg.AssetSelection, partitions_def: dg.PartitionsDefinition
) -> dg.SensorDefinition:
    """The sensor; days outside `partitions_def` (before its start) are logged and skipped."""

    @dg.sensor(
        name=LANDING_SENSOR_NAME,
        target=ingest_and_features,
        minimum_interval_seconds=60,
        description="Ingests files dropped into <lake>/landing/<table>/ (CSV or Parquet) with source=files. "
        + TURN_ON.format(name=LANDING_SENSOR_NAME),
    )
    def landing_files_sensor(
        context: dg.SensorEvaluationContext, warehouse: WarehouseResource, market_data: MarketDataResource
    ) -> dg.SensorResult | dg.SkipReason:
        # The folder the files source of the requested runs reads.
        landing = market_data.landing_path(warehouse.lake())
        previous: FileState = json.loads(context.cursor) if context.cursor else {}
        current = scan_landing(landing)
        changed = changed_files(previous, current)
        if not changed:
            return dg.SkipReason(f"no new or changed files under {landing}")
        tables_by_day: dict[str, set[str]] = defaultdict(set)
        for name in changed:
            table = name.split("/", 1)[0]
            try:
                days = _covered_days(landing, name)
            except SourceError as exc:
                context.log.warning(f"skipping landing file {name}: {exc}")
                continue
            for day in days:
                tables_by_day[day.isoformat()].add(table)
        outside = sorted(day for day in tables_by_day if not partitions_def.has_partition_key(day))
        if outside:
            context.log.warning(f"landing files cover days outside the partitions, not ingested: {outside}")
        requests = [
            _run_request(day, sorted(tables), current)
            for day, tables in sorted(tables_by_day.items())
            if day not in outside
        ]
        return dg.SensorResult(run_requests=requests, cursor=json.dumps(current, sort_keys=True))

    return landing_files_sensor


# The feature assets each raw table feeds (assets.features): a run for new option snapshots recomputes the option
# features, not the day's market features from trades it did not touch.
FEATURES_OF_TABLE: dict[str, tuple[dg.AssetKey, ...]] = {
    "trades": (BARS_1M_KEY, MARKET_KEY),
    "quotes": (BARS_1M_KEY, MARKET_KEY),
    "bars": (MARKET_KEY,),
    "option_snapshots": (OPTIONS_KEY,),
}


def _run_request(day: str, tables: list[str], state: FileState) -> dg.RunRequest:
    files = {name: stat for name, stat in state.items() if name.split("/", 1)[0] in tables}
    # The run key changes whenever a file of that day's tables changes, so a re-dropped file is ingested again.
    digest = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:16]
    run_key = f"landing:{day}:{digest}"
    raw_keys = [dg.AssetKey(["raw", table]) for table in tables]
    features = [key for key in FEATURE_KEYS if any(key in FEATURES_OF_TABLE[table] for table in tables)]
    return dg.RunRequest(
        run_key=run_key,
        partition_key=day,
        asset_selection=[*raw_keys, *features],
        run_config={"resources": {"market_data": {"config": {"source": FILES_RUN_CONFIG_SOURCE}}}},
        tags={"pipeline/trigger": "landing_files"},
    )


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def failure_summary(
    run_id: str,
    job_name: str,
    tags: dict[str, str],
    failed_steps: Sequence[tuple[str, str]],
    run_error: str,
    dagster_home: str,
) -> str:
    """One line: the run, its job and partitions, each failed step with its error's first line, where to look.

    `failed_steps` are (step key, error text) pairs; `run_error` is the run's own failure message, used when no
    step failed (a run that could not start, or was stopped).
    """
    start, end = tags.get("dagster/asset_partition_range_start"), tags.get("dagster/asset_partition_range_end")
    partition = tags.get("dagster/partition")
    partitions = f"partitions {start}...{end}" if start else f"partition {partition}" if partition else "no partition"
    steps = "; ".join(f"step {key}: {_first_line(error)}" for key, error in failed_steps)
    what = steps or f"run error: {_first_line(run_error)}"
    return (
        f"run {run_id} (job {job_name}, {partitions}) failed: {what} | look at /runs/{run_id} in the Dagster UI, "
        f"compute logs under {dagster_home}/storage/{run_id}/compute_logs"
    )


def append_failure_line(lake: Path, line: str) -> Path:
    """Append `line`, stamped with the current UTC time, to <lake>/logs/run_failures.log."""
    path = lake / RUN_FAILURES_LOG
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as log:
        log.write(f"{datetime.now(UTC).isoformat(timespec='seconds')} {line}\n")
    return path


def _root_cause(error: SerializableErrorInfo | None) -> str:
    """The innermost error's message: Dagster wraps the asset's own exception in a step execution error."""
    while error is not None and error.cause is not None:
        error = error.cause
    return error.message if error is not None else ""


@dg.run_failure_sensor(
    name=RUN_FAILURE_SENSOR_NAME,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Writes one line per failed run of this code location (run, job, partitions, failed steps with "
    "their error, where to look) to the sensor's log and to <lake>/logs/run_failures.log. On by default; it is "
    "evaluated only while `dagster dev` or `dagster-daemon run` is running.",
)
def run_failure_summary(context: dg.RunFailureSensorContext, warehouse: WarehouseResource) -> None:
    run = context.dagster_run
    failed_steps = [
        (event.step_key or "?", _root_cause(event.step_failure_data.error))
        for event in context.get_step_failure_events()
    ]
    line = failure_summary(
        run.run_id, run.job_name, dict(run.tags), failed_steps, context.failure_event.message or "",
        context.instance.root_directory,
    )
    path = append_failure_line(warehouse.lake(), line)
    context.log.error(f"{line} (also in {path})")
