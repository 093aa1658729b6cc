"""The landing-file sensor: new or changed files in <lake>/landing/<table>/ trigger ingest runs (source=files).

The cursor is the JSON map {relative path: [mtime_ns, size]} of the files already seen. For every new or changed
file the sensor reads its `ts` column, and requests one run per trading day it covers, selecting only the raw
tables that have new files that day (so a day of trades never blanks that day's quotes) plus the features.
"""

import hashlib
import json
from collections import defaultdict
from pathlib import Path

import dagster as dg

from assets.features import FEATURE_KEYS
from pipeline.market.calendar import is_trading_day
from pipeline.market.file_source import LANDING_SUFFIXES, file_trading_days
from pipeline.market.schemas import RAW_TABLES
from pipeline.market.source import SourceError
from resources.market_data import MarketDataResource
from resources.warehouse import WarehouseResource

FILES_RUN_CONFIG_SOURCE = "files"

FileState = dict[str, list[int]]


def scan_landing(landing_dir: Path) -> FileState:
    """{"<table>/<file>": [mtime_ns, size]} for every landing file of a known raw table."""
    state: FileState = {}
    for table in RAW_TABLES:
        folder = landing_dir / table
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if path.is_file() and path.suffix.lower() in LANDING_SUFFIXES:
                stat = path.stat()
                state[f"{table}/{path.name}"] = [stat.st_mtime_ns, stat.st_size]
    return state


def changed_files(previous: FileState, current: FileState) -> list[str]:
    return sorted(name for name, stat in current.items() if previous.get(name) != stat)


def build_landing_sensor(
    ingest_and_features: dg.AssetSelection, partitions_def: dg.PartitionsDefinition
) -> dg.SensorDefinition:
    """The sensor; days outside `partitions_def` (before its start) are logged and skipped."""

    @dg.sensor(
        name="landing_files_sensor",
        target=ingest_and_features,
        minimum_interval_seconds=60,
        description="Ingests files dropped into <lake>/landing/<table>/ (CSV or Parquet) with source=files.",
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
                days = {day for day in file_trading_days(table, landing / name) if is_trading_day(day)}
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


def _run_request(day: str, tables: list[str], state: FileState) -> dg.RunRequest:
    files = {name: stat for name, stat in state.items() if name.split("/", 1)[0] in tables}
    # The run key changes whenever a file of that day's tables changes, so a re-dropped file is ingested again.
    digest = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:16]
    run_key = f"landing:{day}:{digest}"
    raw_keys = [dg.AssetKey(["raw", table]) for table in tables]
    return dg.RunRequest(
        run_key=run_key,
        partition_key=day,
        asset_selection=[*raw_keys, *FEATURE_KEYS],
        run_config={"resources": {"market_data": {"config": {"source": FILES_RUN_CONFIG_SOURCE}}}},
        tags={"pipeline/trigger": "landing_files"},
    )
