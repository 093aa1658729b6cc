"""The DuckDB warehouse: contract tables, transactional partition rewrites, quarantine, reads."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pytest

from pipeline import lake_lock
from pipeline.contract.schemas import RAW_COLUMNS, RAW_TABLES
from pipeline.lake import Warehouse, WarehouseLockTimeout, lake_dir, raw_table_ddl, warehouse_path

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


def test_a_warehouse_from_before_the_reconstruction_and_delay_columns_gains_them(tmp_path: Path) -> None:
    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE SCHEMA raw")
    con.execute(raw_table_ddl("option_snapshots"))
    for column in ("reconstructed", "null_reason", "delayed"):
        con.execute(f"ALTER TABLE raw.option_snapshots DROP COLUMN {column}")
    con.execute("INSERT INTO raw.option_snapshots (underlying, trading_day) VALUES ('SPY', DATE '2024-07-05')")
    con.close()
    warehouse = Warehouse(path)
    rows = warehouse.query("SELECT underlying, reconstructed, null_reason, delayed FROM raw.option_snapshots")
    # Rows written before the columns existed were observed chains; whether their quotes were live is not known.
    assert rows.rows() == [("SPY", False, None, None)]
    names = warehouse.query(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'option_snapshots'")["column_name"]
    assert set(names) == set(RAW_COLUMNS["option_snapshots"])


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


def test_direct_writes_to_the_quarantine_and_raw_appends_are_refused(warehouse: Warehouse) -> None:
    with pytest.raises(ValueError, match=r"write_partition\(\.\.\., rejected=\.\.\.\)"):
        warehouse.write_partition("quarantine.rejected_rows", [DAY], rejected(DAY, ["a"]))
    with pytest.raises(ValueError, match="written per trading day, with their validation"):
        warehouse.append("quarantine.rejected_rows", rejected(DAY, ["a"]))
    with pytest.raises(ValueError, match="written per trading day, with their validation"):
        warehouse.append("raw.trades", trades(DAY, 1))
    assert warehouse.row_count("quarantine.rejected_rows") == 0
    assert warehouse.row_count("raw.trades") == 0


@pytest.mark.parametrize(
    ("malformed", "message"),
    [
        (lambda f: f.drop("payload"), r"lack columns \['payload'\]"),
        (lambda f: f.with_columns(trading_day=pl.lit("2024-07-05")), r"wrong type \{'trading_day': 'String'\}"),
        (lambda f: f.with_columns(pl.col("ingested_at").dt.replace_time_zone(None)), "wrong type.*ingested_at"),
        (lambda f: f.with_columns(trading_day=pl.lit(None, pl.Date)), r"nulls in \['trading_day'\]"),
        (lambda f: f.with_columns(reason=pl.lit(None, pl.Utf8)), r"nulls in \['reason'\]"),
        (lambda f: f.with_columns(trading_day=pl.lit(NEXT_DAY)), "outside the partition"),
        (lambda f: f.with_columns(payload=pl.lit("{not json")), "payload"),
    ],
    ids=["missing-column", "text-day", "naive-ingested-at", "null-day", "null-reason", "other-day", "bad-json"],
)
def test_malformed_rejected_rows_are_refused_and_keep_the_old_partition(
    warehouse: Warehouse, malformed: Callable[[pl.DataFrame], pl.DataFrame], message: str
) -> None:
    warehouse.write_partition("raw.trades", [DAY], trades(DAY, 2), rejected(DAY, ["old"]))
    with pytest.raises(ValueError, match=message):
        warehouse.write_partition("raw.trades", [DAY], trades(DAY, 5), malformed(rejected(DAY, ["new"])))
    assert warehouse.row_count("raw.trades") == 2
    assert warehouse.query("SELECT trading_day, reason FROM quarantine.rejected_rows").rows() == [(DAY, "old")]


def test_unknown_tables_name_the_known_ones(warehouse: Warehouse) -> None:
    known = r"\['raw\.trades', 'raw\.quotes', 'raw\.bars', 'raw\.option_snapshots'\]"
    with pytest.raises(ValueError, match=rf"unknown table 'raw\.foo': the raw schema holds only {known}"):
        warehouse.write_partition("raw.foo", [DAY], trades(DAY, 1))
    with pytest.raises(ValueError, match=rf"unknown table 'raw\.foo'.*{known}"):
        warehouse.read_partition("raw.foo", [DAY])
    with pytest.raises(ValueError, match=r"unknown table 'quarantine\.other'.*\['quarantine\.rejected_rows'\]"):
        warehouse.row_count("quarantine.other")


# A DuckDB session that ignores our lock (a CLI, a notebook) and holds the file until its stdin closes.
HOLDER = """
import sys, duckdb
con = duckdb.connect(sys.argv[1])
print("holding", flush=True)
sys.stdin.read()
con.close()
"""


def test_open_gives_up_after_its_retries_with_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "warehouse.duckdb"
    patient, impatient = Warehouse(db, lock_timeout_s=3600), Warehouse(db, lock_timeout_s=0)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(db)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    waits: list[float] = []
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"holding"
        # Record the backoff instead of sleeping it: the retry limit, not the deadline, must stop the first call.
        monkeypatch.setattr(lake_lock.time, "sleep", waits.append)
        with pytest.raises(WarehouseLockTimeout, match=rf"could not open the warehouse {db}.*holds the file") as info:
            patient.row_count("raw.trades")
        assert isinstance(info.value.__cause__, duckdb.IOException)
        retries = len(waits)
        with pytest.raises(WarehouseLockTimeout, match="close it and retry"):
            impatient.row_count("raw.trades")
    finally:
        monkeypatch.undo()
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)
    assert retries == lake_lock._OPEN_RETRIES == 8
    # Past its deadline at the first failure, the impatient one does not wait at all.
    assert len(waits) == retries
    # Doubling from 50 ms, capped at 2 s, each stretched by a jitter factor in [1, 2).
    base = np.minimum(0.05 * 2.0 ** np.arange(8), 2.0)
    assert np.all(np.asarray(waits) >= base) and np.all(np.asarray(waits) < 2 * base)
    assert patient.row_count("raw.trades") == 0


def test_a_derived_table_gains_the_columns_a_newer_writer_adds(warehouse: Warehouse) -> None:
    # A lake written before evaluation.backtest_metrics had its `note` column keeps working after the upgrade.
    old = pl.DataFrame({"trading_day": [DAY], "value": [1.0]})
    warehouse.write_partition("evaluation.backtest_metrics", [DAY], old)
    new = pl.DataFrame({"trading_day": [NEXT_DAY], "value": [None], "note": ["1 trading day"]},
                       schema={"trading_day": pl.Date, "value": pl.Float64, "note": pl.Utf8})
    warehouse.write_partition("evaluation.backtest_metrics", [NEXT_DAY], new)
    back = warehouse.query("SELECT * FROM evaluation.backtest_metrics ORDER BY trading_day")
    assert back.columns == ["trading_day", "value", "note"] and back["note"].to_list() == [None, "1 trading day"]
