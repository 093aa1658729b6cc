"""The DuckDB warehouse: contract tables, transactional partition rewrites, quarantine, reads."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import polars as pl
import pytest

from pipeline.lake import Warehouse, lake_dir, warehouse_path
from pipeline.market.schemas import RAW_COLUMNS, RAW_TABLES

DAY = date(2024, 7, 5)
NEXT_DAY = date(2024, 7, 8)


def trades(day: date, n: int, price: float = 100.0) -> pl.DataFrame:
    start = datetime(day.year, day.month, day.day, 13, 30, tzinfo=UTC)
    return pl.DataFrame(
        {
            "symbol": ["SPY"] * n,
            "ts": [start + timedelta(seconds=i) for i in range(n)],
            "price": [price + i * 0.01 for i in range(n)],
            "size": [100.0] * n,
            "exchange": ["P"] * n,
            "conditions": [None] * n,
            "source": ["test"] * n,
            "trading_day": [day] * n,
        },
        schema=RAW_COLUMNS["trades"],
    )


def rejected(day: date, reasons: list[str]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "source_table": ["trades"] * len(reasons),
            "trading_day": [day] * len(reasons),
            "reason": reasons,
            "payload": ['{"price": -1.0}'] * len(reasons),
            "ingested_at": [datetime.now(UTC)] * len(reasons),
        }
    )


@pytest.fixture()
def warehouse(tmp_path: Path) -> Warehouse:
    return Warehouse(tmp_path / "warehouse.duckdb")


def test_lake_dir_reads_env_at_call_time(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PIPELINE_DATA_LAKE", str(tmp_path / "lake"))
    assert lake_dir() == tmp_path / "lake"
    assert warehouse_path() == tmp_path / "lake" / "warehouse.duckdb"
    monkeypatch.delenv("PIPELINE_DATA_LAKE")
    assert lake_dir() == Path("data_lake")


def test_contract_tables_have_contract_types(warehouse: Warehouse) -> None:
    for table in RAW_TABLES:
        assert warehouse.table_exists(f"raw.{table}")
        empty = warehouse.read_partition(f"raw.{table}", [DAY])
        assert empty.schema == pl.Schema(RAW_COLUMNS[table])
    types = warehouse.query(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = 'quarantine' AND table_name = 'rejected_rows' ORDER BY ordinal_position"
    )
    assert types.rows() == [
        ("source_table", "VARCHAR"),
        ("trading_day", "DATE"),
        ("reason", "VARCHAR"),
        ("payload", "JSON"),
        ("ingested_at", "TIMESTAMP WITH TIME ZONE"),
    ]
    schemas = set(warehouse.query("SELECT schema_name FROM information_schema.schemata")["schema_name"])
    assert {"raw", "quarantine", "features", "models", "evaluation"} <= schemas


def test_rewrite_replaces_partition_and_its_quarantine(warehouse: Warehouse) -> None:
    warehouse.write_partition("raw.trades", [DAY], trades(DAY, 50), rejected(DAY, ["a", "b", "c"]))
    warehouse.write_partition("raw.trades", [NEXT_DAY], trades(NEXT_DAY, 7), rejected(NEXT_DAY, ["z"]))

    stats = warehouse.write_partition("raw.trades", [DAY], trades(DAY, 30, price=200.0), rejected(DAY, ["d"]))

    assert (stats.rows_deleted, stats.rows_inserted) == (50, 30)
    assert (stats.rejected_deleted, stats.rejected_inserted) == (3, 1)
    day = warehouse.read_partition("raw.trades", [DAY])
    assert day.height == 30
    assert day["price"].min() == pytest.approx(200.0)
    assert warehouse.row_count("raw.trades", [NEXT_DAY]) == 7
    reasons = warehouse.query("SELECT trading_day, reason FROM quarantine.rejected_rows ORDER BY trading_day")
    assert reasons.rows() == [(DAY, "d"), (NEXT_DAY, "z")]


def test_same_partition_twice_is_identical(warehouse: Warehouse) -> None:
    frame = trades(DAY, 40)
    warehouse.write_partition("raw.trades", [DAY], frame, rejected(DAY, ["x"]))
    first = warehouse.read_partition("raw.trades", [DAY])
    warehouse.write_partition("raw.trades", [DAY], frame, rejected(DAY, ["x"]))
    second = warehouse.read_partition("raw.trades", [DAY])
    assert first.equals(second)
    assert warehouse.row_count("raw.trades") == 40
    assert warehouse.row_count("quarantine.rejected_rows") == 1


def test_quarantine_is_keyed_by_source_table(warehouse: Warehouse) -> None:
    warehouse.write_partition("raw.trades", [DAY], trades(DAY, 1), rejected(DAY, ["bad trade"]))
    quotes = pl.DataFrame(schema=RAW_COLUMNS["quotes"])
    warehouse.write_partition("raw.quotes", [DAY], quotes, rejected(DAY, ["bad quote"]), source_table="quotes")
    kept = warehouse.query("SELECT source_table, reason FROM quarantine.rejected_rows ORDER BY source_table")
    assert kept.rows() == [("quotes", "bad quote"), ("trades", "bad trade")]


def test_multi_day_write_and_read(warehouse: Warehouse) -> None:
    both = pl.concat([trades(DAY, 5), trades(NEXT_DAY, 6)])
    warehouse.write_partition("raw.trades", [DAY, NEXT_DAY], both)
    assert warehouse.row_count("raw.trades", [DAY, NEXT_DAY]) == 11
    prices = warehouse.read_partition("raw.trades", [NEXT_DAY], columns=["price", "trading_day"])
    assert prices.columns == ["price", "trading_day"]
    assert prices.height == 6


def test_rows_outside_the_partition_are_refused(warehouse: Warehouse) -> None:
    with pytest.raises(ValueError, match="outside the partition"):
        warehouse.write_partition("raw.trades", [DAY], trades(NEXT_DAY, 3))
    assert warehouse.row_count("raw.trades") == 0


def test_features_table_created_on_first_write(warehouse: Warehouse) -> None:
    frame = pl.DataFrame(
        {"symbol": ["SPY"], "ts": [datetime(2024, 7, 5, 14, tzinfo=UTC)], "vwap": [1.5], "trading_day": [DAY]}
    )
    assert not warehouse.table_exists("features.bars_1m")
    warehouse.write_partition("features.bars_1m", [DAY], frame)
    warehouse.write_partition("features.bars_1m", [DAY], frame)
    back = warehouse.read_partition("features.bars_1m", [DAY])
    assert back.equals(frame)
    assert back.schema["ts"] == pl.Datetime("us", "UTC")


def test_failed_write_rolls_back_and_keeps_old_content(warehouse: Warehouse) -> None:
    good = pl.DataFrame({"x": [1.0, 2.0], "trading_day": [DAY, DAY]})
    warehouse.write_partition("features.market", [DAY], good)
    wrong_columns = pl.DataFrame({"y": [3.0], "trading_day": [DAY]})
    with pytest.raises(ValueError, match="do not fit the table"):
        warehouse.write_partition("features.market", [DAY], wrong_columns)
    assert warehouse.read_partition("features.market", [DAY]).equals(good)


def test_bad_table_names_and_columns_say_what_to_do(warehouse: Warehouse) -> None:
    with pytest.raises(ValueError, match="snake_case"):
        warehouse.write_partition("trades; DROP TABLE raw.trades", [DAY], trades(DAY, 1))
    with pytest.raises(ValueError, match="contract"):
        warehouse.write_partition("raw.trades", [DAY], trades(DAY, 1).drop("conditions"))
    with pytest.raises(ValueError, match="trading_day"):
        warehouse.write_partition("features.x", [DAY], pl.DataFrame({"a": [1]}))
    with pytest.raises(ValueError, match="does not exist"):
        warehouse.read_partition("features.never_written", [DAY])
    with pytest.raises(ValueError, match="empty"):
        warehouse.read_partition("raw.trades", [])
    with pytest.raises(ValueError, match="cannot select columns"):
        warehouse.read_partition("raw.trades", [DAY], columns=["no_such_column"])


def test_append_and_execute(warehouse: Warehouse) -> None:
    row = pl.DataFrame({"model_id": ["m1"], "trading_day": [DAY], "status": ["candidate"]})
    warehouse.append("models.registry", row)
    warehouse.execute("UPDATE models.registry SET status = ? WHERE model_id = ?", ["production", "m1"])
    assert warehouse.query("SELECT status FROM models.registry").item() == "production"


def test_no_connection_is_held_between_calls(warehouse: Warehouse) -> None:
    warehouse.write_partition("raw.trades", [DAY], trades(DAY, 3))
    # A foreign read-write connection only succeeds if the warehouse closed its own.
    con = duckdb.connect(str(warehouse.path))
    try:
        assert con.execute("SELECT count(*) FROM raw.trades").fetchall() == [(3,)]
    finally:
        con.close()
