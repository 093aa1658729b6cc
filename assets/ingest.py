"""Ingest assets: fetch each trading day of a raw table, validate it, write raw + quarantine in one transaction.

One asset per raw table (`raw/trades`, `raw/quotes`, `raw/bars`, `raw/option_snapshots`). A single-run range
backfill handles every day of the range in one write, so a partition is always either its old or its new content.
"""

import dagster as dg
import polars as pl
from pydantic import Field

from assets.checks import DEFAULT_MAX_REJECTED_SHARE, rejected_share_result, rejected_share_spec
from assets.metadata import frame_metadata, partition_days, window_metadata
from pipeline.market.calendar import trading_session
from pipeline.market.schemas import RAW_TABLES
from pipeline.market.validation import validate
from resources.market_data import MarketDataResource
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
        accepted, rejected, rows_read = [], [], 0
        for day in days:
            session = trading_session(day)
            result = validate(table, source.fetch(table, session, symbols), session)
            accepted.append(result.accepted)
            rejected.append(result.rejected)
            rows_read += result.rows_read
        accepted_frame = pl.concat(accepted, how="vertical_relaxed")
        rejected_frame = pl.concat(rejected, how="vertical_relaxed")
        store = warehouse.warehouse()
        store.write_partition(f"raw.{table}", days, accepted_frame, rejected_frame)
        context.log.info(
            f"raw.{table}: {accepted_frame.height} rows accepted, {rejected_frame.height} quarantined "
            f"over {len(days)} trading day(s) from source {market_data.source_name()}"
        )
        return dg.MaterializeResult(
            metadata={
                **window_metadata(days),
                **frame_metadata(accepted_frame, store.row_count(f"raw.{table}")),
                "source": market_data.source_name(),
                "rows_read": rows_read,
                "rows_accepted": accepted_frame.height,
                "rows_rejected": rejected_frame.height,
                "rejected_by_reason": dg.MetadataValue.json(reason_counts(rejected_frame)),
            },
            check_results=[
                rejected_share_result(key, rows_read, rejected_frame.height, config.max_rejected_share)
            ],
        )

    return _ingest


def build_ingest_assets(partitions_def: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    return [build_raw_asset(table, partitions_def) for table in RAW_TABLES]
