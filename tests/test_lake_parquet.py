"""The lake past one file: a range of the warehouse exported as Hive-partitioned Parquet reads back the same rows and
types, a range query opens only its days' folders, and a re-export replaces each day whole."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import duckdb
import polars as pl
import pytest
from conftest import ingest_history
from polars.testing import assert_frame_equal

from pipeline.contract.calendar import trading_days
from pipeline.lake import Warehouse
from pipeline.lake_parquet import export_range, exportable_tables, main, parquet_glob, read_range
from resources.sources import MarketDataResource

DAYS = trading_days("2024-07-03", "2024-07-08")  # 2024-07-03 closes early, 07-04 is a holiday
TABLES_WITH_ROWS = ("raw.trades", "raw.quotes", "raw.option_snapshots", "features.bars_1m", "features.market",
                    "features.options")


@pytest.fixture(scope="module")
def store(module_lake_env: dict[str, str]) -> Warehouse:
    ingest_history(DAYS, MarketDataResource(snapshot_minutes=120))
    return Warehouse(Path(module_lake_env["PIPELINE_DATA_LAKE"]) / "warehouse.duckdb")


@pytest.fixture(scope="module")
def root(store: Warehouse, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("parquet")
    export_range(store, root, DAYS[0], DAYS[-1])
    return root


def _sorted(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.sort(frame.columns)


def _warehouse_rows(store: Warehouse, table: str, first: date, last: date) -> pl.DataFrame:
    return store.query(f"SELECT * FROM {table} WHERE trading_day BETWEEN ? AND ?", [first, last])


@pytest.mark.parametrize("table", TABLES_WITH_ROWS)
def test_a_range_reads_back_the_warehouse_rows_and_types(store: Warehouse, root: Path, table: str) -> None:
    expected = _warehouse_rows(store, table, DAYS[0], DAYS[-1])
    assert expected.height and set(expected["trading_day"]) == set(DAYS)
    read = read_range(root, table, DAYS[0], DAYS[-1])
    assert read.schema == expected.schema  # column order and types: TIMESTAMPTZ in UTC, trading_day a date
    assert read.schema["trading_day"] == pl.Date
    assert_frame_equal(_sorted(read), _sorted(expected))


def test_the_folders_are_hive_partitions_duckdb_queries_in_place(store: Warehouse, root: Path) -> None:
    folders = sorted(p.name for p in (root / "raw" / "trades").iterdir())
    assert folders == [f"trading_day={day.isoformat()}" for day in DAYS]
    assert not list((root / "_staging").iterdir())  # nothing left behind by the swaps
    counts = duckdb.sql(
        f"SELECT trading_day, count(*) FROM read_parquet('{parquet_glob(root, 'raw.trades')}', "
        "hive_partitioning = true) GROUP BY ALL ORDER BY 1"
    ).fetchall()
    expected = store.query("SELECT trading_day, count(*) AS n FROM raw.trades GROUP BY ALL ORDER BY 1")
    assert counts == list(expected.iter_rows())


def test_a_range_query_opens_only_its_days(store: Warehouse, root: Path, tmp_path: Path) -> None:
    export_range(store, tmp_path, DAYS[0], DAYS[-1], ["raw.quotes"])
    # Corrupt the first day: a query that opened its file would fail.
    (tmp_path / "raw" / "quotes" / f"trading_day={DAYS[0].isoformat()}" / "part-0.parquet").write_bytes(b"not parquet")
    later = read_range(tmp_path, "raw.quotes", DAYS[1], DAYS[-1])
    assert_frame_equal(_sorted(later), _sorted(_warehouse_rows(store, "raw.quotes", DAYS[1], DAYS[-1])))
    with pytest.raises(duckdb.InvalidInputException):
        read_range(tmp_path, "raw.quotes", DAYS[0], DAYS[-1])


def test_a_re_export_replaces_each_day_whole(store: Warehouse, tmp_path: Path) -> None:
    table, day = "features.bars_1m", DAYS[1]
    first = export_range(store, tmp_path, DAYS[0], DAYS[-1], [table])
    again = export_range(store, tmp_path, DAYS[0], DAYS[-1], [table])
    assert first == again and [e.trading_day for e in again] == DAYS
    assert_frame_equal(_sorted(read_range(tmp_path, table, DAYS[0], DAYS[-1])),
                       _sorted(_warehouse_rows(store, table, DAYS[0], DAYS[-1])))
    # A day re-exported with fewer rows holds only those; a day that lost its rows loses its folder.
    backup = store.read_partition(table, DAYS)
    try:
        store.execute(f"DELETE FROM {table} WHERE trading_day = ? AND symbol = 'QQQ'", [day])
        store.execute(f"DELETE FROM {table} WHERE trading_day = ?", [DAYS[-1]])
        done = export_range(store, tmp_path, day, DAYS[-1], [table])
        assert [(e.trading_day, e.removed) for e in done] == [(day, False), (DAYS[-1], True)]
        assert read_range(tmp_path, table, day, day)["symbol"].unique().to_list() == ["SPY"]
        assert not (tmp_path / "features" / "bars_1m" / f"trading_day={DAYS[-1].isoformat()}").exists()
        assert_frame_equal(_sorted(read_range(tmp_path, table, DAYS[0], DAYS[-1])),
                           _sorted(_warehouse_rows(store, table, DAYS[0], DAYS[-1])))
    finally:
        store.write_partition(table, DAYS, backup)


def test_the_cli_exports_a_range(store: Warehouse, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["export", "--from", DAYS[0].isoformat(), "--to", DAYS[0].isoformat(), "--root", str(tmp_path),
          "--warehouse", str(store.path), "--table", "raw.trades"])
    summary = json.loads(capsys.readouterr().out)
    assert summary["days_written"] == 1 and summary["rows"] == store.row_count("raw.trades", [DAYS[0]])
    assert read_range(tmp_path, "raw.trades", DAYS[0], DAYS[0]).height == summary["rows"]


def test_export_names_the_tables_and_refuses_a_reversed_range(store: Warehouse, tmp_path: Path) -> None:
    assert set(TABLES_WITH_ROWS) <= set(exportable_tables(store))
    with pytest.raises(ValueError, match="before"):
        export_range(store, tmp_path, DAYS[-1], DAYS[0])
    with pytest.raises(ValueError, match="export it first"):
        read_range(tmp_path, "raw.trades", DAYS[0], DAYS[-1])
