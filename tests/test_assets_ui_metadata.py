"""What the Dagster UI shows of the data assets: every column described before any run, and after a single-run
range backfill each partition's materialization carries that day's figures, not the range's."""

from __future__ import annotations

from datetime import date

import dagster as dg
import pytest

from assets.features import FEATURE_KEYS, build_feature_assets
from assets.ingest import build_ingest_assets, raw_asset_key
from pipeline.contract.calendar import trading_days
from pipeline.contract.column_docs import RAW_COLUMN_DOCS
from pipeline.contract.schemas import RAW_COLUMNS, RAW_TABLES
from pipeline.features.catalog import features_of
from pipeline.lake import Warehouse
from pipeline.partitions import trading_day_partitions
from resources.sources import MarketDataResource
from resources.warehouse import WarehouseResource

# 2024-07-03 closes early (13:00 New York), so its days hold fewer rows than 2024-07-05's: a partition reporting
# the range's figures, or the other day's, cannot pass.
FIRST, LAST = "2024-07-03", "2024-07-05"
DAYS = trading_days(FIRST, LAST)
RANGE_TAGS = {"dagster/asset_partition_range_start": FIRST, "dagster/asset_partition_range_end": LAST}
TABLES = {raw_asset_key(t): f"raw.{t}" for t in RAW_TABLES} | {k: ".".join(k.path) for k in FEATURE_KEYS}


@pytest.fixture(scope="module")
def assets() -> list[dg.AssetsDefinition]:
    partitions = trading_day_partitions()
    return [*build_ingest_assets(partitions), *build_feature_assets(partitions)]


@pytest.fixture(scope="module")
def instance(module_lake_env: dict[str, str]) -> dg.DagsterInstance:
    return dg.DagsterInstance.get()


@pytest.fixture(scope="module")
def range_run(assets, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    resources = {"warehouse": WarehouseResource(), "market_data": MarketDataResource(snapshot_minutes=60)}
    result = dg.materialize(assets, resources=resources, instance=instance, tags=RANGE_TAGS)
    assert result.success
    return result


@pytest.fixture(scope="module")
def store(range_run, module_lake_env: dict[str, str]) -> Warehouse:
    return Warehouse(f"{module_lake_env['PIPELINE_DATA_LAKE']}/warehouse.duckdb")


def _spec_schema(assets: list[dg.AssetsDefinition], key: dg.AssetKey) -> dg.TableSchema:
    (spec,) = [spec for a in assets for spec in a.specs if spec.key == key]
    return spec.metadata["dagster/column_schema"]


def _expected_columns(table: str) -> list[str]:
    if table.startswith("raw."):
        return list(RAW_COLUMNS[table.removeprefix("raw.")])
    return [f.name for f in features_of(table)]


@pytest.mark.parametrize("key", list(TABLES), ids=list(TABLES.values()))
def test_every_column_is_described_before_any_run(assets, key: dg.AssetKey) -> None:
    columns = _spec_schema(assets, key).columns
    assert [c.name for c in columns] == _expected_columns(TABLES[key])
    undescribed = [c.name for c in columns if not (c.description or "").strip()]
    assert not undescribed, f"{TABLES[key]}: no description for {undescribed}"


def test_feature_descriptions_come_from_the_catalog(assets) -> None:
    columns = {c.name: c.description for c in _spec_schema(assets, FEATURE_KEYS[1]).columns}
    for feature in features_of("features.market"):
        assert feature.formula in columns[feature.name]
        if feature.window.text != "-":
            assert str(feature.window) in columns[feature.name]


@pytest.mark.parametrize("key", list(TABLES), ids=list(TABLES.values()))
def test_described_columns_are_the_warehouse_columns(assets, store: Warehouse, key: dg.AssetKey) -> None:
    table = TABLES[key]
    schema, name = table.split(".")
    stored = store.query(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = ? AND table_name = ? "
        "ORDER BY ordinal_position", [schema, name],
    )["column_name"].to_list()
    assert [c.name for c in _spec_schema(assets, key).columns] == stored


def _partition_metadata(instance: dg.DagsterInstance, key: dg.AssetKey, day: date) -> dict:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[day.isoformat()]), limit=1
    ).records
    (record,) = records
    return {k: v.value for k, v in record.asset_materialization.metadata.items()}


@pytest.mark.parametrize("key", list(TABLES), ids=list(TABLES.values()))
def test_each_partition_reports_its_own_day(range_run, instance, store: Warehouse, key: dg.AssetKey) -> None:
    table = TABLES[key]
    for day in DAYS:
        meta = _partition_metadata(instance, key, day)
        day_rows = store.row_count(table, [day])
        assert meta["dagster/row_count"] == meta["rows_written"] == day_rows, (table, day)
        assert meta["first_trading_day"] == meta["last_trading_day"] == day.isoformat()
        assert (meta["run_first_trading_day"], meta["run_last_trading_day"]) == (FIRST, LAST)
        # The materialization's schema (the storage types) keeps the descriptions.
        assert all(c.description for c in meta["dagster/column_schema"].columns)


def test_days_of_the_range_differ(store: Warehouse) -> None:
    """The per-partition test means something only if the days' counts differ (early close vs full session)."""
    for table in ("raw.trades", "features.bars_1m", "features.market"):
        counts = [store.row_count(table, [day]) for day in DAYS]
        assert counts[0] < counts[1], table


def test_ingest_partition_accounts_for_its_rows(range_run, instance, store: Warehouse) -> None:
    for table in RAW_TABLES:
        total_read = 0
        for day in DAYS:
            meta = _partition_metadata(instance, raw_asset_key(table), day)
            assert meta["rows_read"] == meta["rows_accepted"] + meta["rows_rejected"]
            assert meta["rows_accepted"] == store.row_count(f"raw.{table}", [day])
            total_read += meta["rows_read"]
        (check,) = [e for e in range_run.get_asset_check_evaluations() if e.asset_key == raw_asset_key(table)]
        # The run-wide check saw every day's rows: its rejected count is the days' sum.
        rejected = sum(_partition_metadata(instance, raw_asset_key(table), d)["rows_rejected"] for d in DAYS)
        assert check.metadata["rows_rejected"].value == rejected


def test_bars_1m_partition_read_its_own_raw_rows(range_run, instance, store: Warehouse) -> None:
    for day in DAYS:
        bars = _partition_metadata(instance, FEATURE_KEYS[0], day)
        raw_rows = store.row_count("raw.trades", [day]) + store.row_count("raw.quotes", [day])
        assert bars["rows_read"] == raw_rows
        assert bars["symbols"] == 2


def test_raw_column_docs_name_only_real_columns() -> None:
    for table, docs in RAW_COLUMN_DOCS.items():
        assert set(docs) <= set(RAW_COLUMNS[table]), table
