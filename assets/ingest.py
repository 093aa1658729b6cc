"""Ingest assets: fetch each trading day of a raw table, validate it, write raw + quarantine in one transaction.

One asset per raw table (`raw/trades`, `raw/quotes`, `raw/bars`, `raw/option_snapshots`). A single-run range
backfill fetches, validates and writes one day at a time, each day in its own transaction, so a partition is
always either its old or its new content and the run holds one day's rows whatever the range (a backfill of years
fits in memory); each day's partition reports its own rows read, accepted and rejected. A day that fails stops
the run; the days written before it are recorded as materialized (`commit_days`).
"""

from datetime import date

import dagster as dg
import polars as pl
from pydantic import Field

from assets.checks import DEFAULT_MAX_REJECTED_SHARE, rejected_share_result, rejected_share_spec
from assets.metadata import (
    Metadata,
    RunColumns,
    commit_days,
    partition_days,
    partition_metadata,
    raw_column_descriptions,
    raw_table_schema,
    run_metadata,
)
from pipeline.contract.calendar import trading_session
from pipeline.contract.schemas import RAW_TABLES
from pipeline.contract.validation import validate
from resources.sources import MarketDataResource
from resources.warehouse import WarehouseResource

INGEST_GROUP = "ingest"


class IngestConfig(dg.Config):
    max_rejected_share: float = Field(
        default=DEFAULT_MAX_REJECTED_SHARE,
        description="Blocking check threshold: largest share of fetched rows that may be quarantined.",
    )


def raw_asset_key(table: str) -> dg.AssetKey:
    return dg.AssetKey(["raw", table])


def reason_counts(rejected: pl.DataFrame) -> dict[str, int]:
    if rejected.is_empty() or "reason" not in rejected.columns:
        return {}
    counts = rejected.group_by("reason").len().sort("reason")
    return {str(reason): int(n) for reason, n in counts.iter_rows()}


def option_snapshot_counts(table: str, accepted: pl.DataFrame) -> dict[str, dg.MetadataValue]:
    """For option chains: snapshot times per underlying, so a day the collector missed slots of shows it."""
    if table != "option_snapshots" or accepted.is_empty():
        return {}
    counts = accepted.group_by("underlying").agg(pl.col("ts").n_unique()).sort("underlying")
    return {"snapshots_per_underlying": dg.MetadataValue.json(dict(counts.iter_rows()))}


def build_raw_asset(table: str, partitions_def: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    """The ingest asset of one raw table."""
    key = raw_asset_key(table)

    @dg.asset(
        key=key,
        description=f"Validated rows of raw.{table}; rejected rows go to quarantine.rejected_rows.",
        group_name=INGEST_GROUP,
        kinds={"duckdb", "polars"},
        partitions_def=partitions_def,
        backfill_policy=dg.BackfillPolicy.single_run(),
        pool="duckdb",
        check_specs=[rejected_share_spec(key)],
        metadata={"dagster/column_schema": raw_table_schema(table)},
    )
    def _ingest(
        context: dg.AssetExecutionContext,
        config: IngestConfig,
        market_data: MarketDataResource,
        warehouse: WarehouseResource,
    ) -> dg.MaterializeResult:
        days = partition_days(context)
        source = market_data.build_source(warehouse.lake())
        symbols = market_data.universe()
        store = warehouse.warehouse()
        columns = RunColumns()

        def ingest(day: date) -> tuple[tuple[int, int, int], Metadata]:
            """Fetch, validate and write one day (one transaction); its rows are freed on return."""
            session = trading_session(day)
            result = validate(table, source.fetch(table, session, symbols), session)
            store.write_partition(f"raw.{table}", [day], result.accepted, result.rejected)
            columns.see(result.accepted)
            return (result.rows_read, result.accepted.height, result.rejected.height), {
                **partition_metadata(day, result.accepted, store.row_count(f"raw.{table}", [day])),
                "rows_read": result.rows_read,
                "rows_accepted": result.accepted.height,
                "rows_rejected": result.rejected.height,
                "rejected_by_reason": dg.MetadataValue.json(reason_counts(result.rejected)),
                **option_snapshot_counts(table, result.accepted),
            }

        counts = commit_days(context, days, ingest)
        rows_read, accepted, rejected = (sum(column) for column in zip(*counts, strict=True))
        context.log.info(
            f"raw.{table}: {accepted} rows accepted, {rejected} quarantined "
            f"over {len(days)} trading day(s) from source {market_data.source_name()}"
        )
        return dg.MaterializeResult(
            metadata={
                **run_metadata(days, columns.frame, raw_column_descriptions(table)),
                "source": market_data.source_name(),
            },
            check_results=[
                rejected_share_result(key, rows_read, rejected, config.max_rejected_share)
            ],
        )

    return _ingest


def build_ingest_assets(partitions_def: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    return [build_raw_asset(table, partitions_def) for table in RAW_TABLES]
