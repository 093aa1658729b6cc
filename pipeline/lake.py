"""The DuckDB warehouse: every DuckDB access of the project goes through `Warehouse`.

A partition write is one transaction (BEGIN; DELETE the partition; INSERT the new rows; COMMIT), so readers see
the old or the new content of a partition, never an empty or half-written one, and a re-run adds no duplicates.
Connections are short-lived and serialized across processes by a file lock (see `pipeline.lake_lock`): DuckDB
allows one read-write process per file, and holding no connection between calls lets many processes share it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from pipeline.contract.schemas import QUARANTINE_COLUMNS, RAW_COLUMNS, RAW_DEFAULTS
from pipeline.lake_lock import WarehouseLockTimeout, file_lock, open_with_retry

__all__ = ["Warehouse", "WarehouseLockTimeout", "WriteStats", "lake_dir", "warehouse_path"]

SCHEMAS: tuple[str, ...] = ("raw", "quarantine", "features", "models", "evaluation")
# Schemas whose tables are created from the first frame written to them (their columns belong to other stages).
_AUTO_CREATE_SCHEMAS = frozenset({"features", "models", "evaluation"})
_TABLE_NAME = re.compile(r"^(raw|quarantine|features|models|evaluation)\.([a-z_][a-z0-9_]*)$")
_STAGING = "_pipeline_incoming"

_SQL_TYPES: dict[pl.DataType, str] = {
    pl.Utf8: "VARCHAR",
    pl.Float64: "DOUBLE",
    pl.Boolean: "BOOLEAN",
    pl.Date: "DATE",
    pl.Datetime("us", "UTC"): "TIMESTAMPTZ",
}

QUARANTINE_TABLE = "quarantine.rejected_rows"


def lake_dir() -> Path:
    """The data lake folder: `$PIPELINE_DATA_LAKE` (read at call time), default `./data_lake`."""
    return Path(os.environ.get("PIPELINE_DATA_LAKE", "data_lake"))


def warehouse_path() -> Path:
    """The DuckDB file of the data lake."""
    return lake_dir() / "warehouse.duckdb"


@dataclass(frozen=True)
class WriteStats:
    """What one partition write did."""

    table: str
    trading_days: tuple[date, ...]
    rows_deleted: int
    rows_inserted: int
    rejected_deleted: int
    rejected_inserted: int


def _check_table_name(table: str) -> tuple[str, str]:
    match = _TABLE_NAME.match(table)
    if match is None:
        raise ValueError(
            f"table name {table!r} is not '<schema>.<name>' with schema one of {SCHEMAS} and a lowercase "
            "snake_case name (e.g. 'raw.trades', 'features.bars_1m')"
        )
    schema, name = match.group(1), match.group(2)
    # raw and quarantine hold fixed tables only; the other schemas grow a table on its first write.
    fixed = {"raw": [f"raw.{t}" for t in RAW_COLUMNS], "quarantine": [QUARANTINE_TABLE]}.get(schema)
    if fixed is not None and table not in fixed:
        raise ValueError(f"unknown table {table!r}: the {schema} schema holds only {fixed}")
    return schema, name


def raw_table_ddl(name: str) -> str:
    """CREATE TABLE for raw.<name> with the contract's columns and DuckDB types."""
    columns = ", ".join(f'"{col}" {_SQL_TYPES[dtype]}' for col, dtype in RAW_COLUMNS[name].items())
    return f"CREATE TABLE IF NOT EXISTS raw.{name} ({columns})"


def _scalar(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any]) -> int:
    # fetchall() drains the result: DuckDB 2.0 refuses new work on a connection with an unfinished result.
    rows = con.execute(sql, params).fetchall()
    return int(rows[0][0]) if rows else 0


def _day_list(trading_days: Sequence[date]) -> list[date]:
    days = sorted(set(trading_days))
    if not days:
        raise ValueError("trading_days is empty: name at least one trading day (the partition) to write or read")
    return days


class Warehouse:
    """One DuckDB warehouse file; each method opens, uses and closes its own connection under the lock."""

    def __init__(self, path: str | Path | None = None, lock_timeout_s: float = 600.0) -> None:
        self.path = Path(path) if path is not None else warehouse_path()
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.lock_timeout_s = lock_timeout_s
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._create_contract_tables()

    @contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-write connection held under the inter-process lock; closed on exit. Keep the block short."""
        with file_lock(self.lock_path, self.lock_timeout_s):
            con = open_with_retry(self.path, self.lock_timeout_s)
            try:
                # TIMESTAMPTZ values come back in the session time zone: keep everything in UTC.
                con.execute("SET TimeZone = 'UTC'")
                yield con
            finally:
                con.close()

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """`connect()` inside BEGIN ... COMMIT; any exception rolls everything back."""
        with self.connect() as con:
            con.execute("BEGIN TRANSACTION")
            try:
                yield con
            except BaseException:
                con.rollback()
                raise
            con.execute("COMMIT")

    def _create_contract_tables(self) -> None:
        with self.connect() as con:
            for schema in SCHEMAS:
                con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
            for name in RAW_COLUMNS:
                con.execute(raw_table_ddl(name))
                self._add_new_contract_columns(con, name)
            con.execute(
                f"CREATE TABLE IF NOT EXISTS {QUARANTINE_TABLE} (source_table VARCHAR, trading_day DATE, "
                "reason VARCHAR, payload JSON, ingested_at TIMESTAMPTZ)"
            )

    @staticmethod
    def _add_new_contract_columns(con: duckdb.DuckDBPyConnection, name: str) -> None:
        """A warehouse made before a contract column existed gains it (rows written since insert by name)."""
        have = {row[0] for row in con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = 'raw' AND table_name = ?",
            [name],
        ).fetchall()}
        defaults = RAW_DEFAULTS.get(name, {})
        for col, dtype in RAW_COLUMNS[name].items():
            if col not in have:
                default = defaults.get(col)
                fill = "" if default is None else f" DEFAULT {str(default).lower()}"
                con.execute(f'ALTER TABLE raw.{name} ADD COLUMN "{col}" {_SQL_TYPES[dtype]}{fill}')

    def write_partition(
        self,
        table: str,
        trading_days: Sequence[date],
        accepted: pl.DataFrame,
        rejected: pl.DataFrame | None = None,
        source_table: str | None = None,
    ) -> WriteStats:
        """Replace the rows of `trading_days` in `table` by `accepted` (and their quarantined rows by `rejected`).

        One transaction: the partition is the old or the new content, never empty or half-written. Tables under
        features/models/evaluation are created from `accepted`'s schema on first write; raw tables are fixed.
        `source_table` (default: the table name without schema) keys the rows replaced in the quarantine.
        """
        schema, name = _check_table_name(table)
        days = _day_list(trading_days)
        if schema == "quarantine":
            raise ValueError(f"{table}: write rejected rows through write_partition(..., rejected=...) instead")
        if "trading_day" not in accepted.columns:
            raise ValueError(f"{table}: the frame has no 'trading_day' column; every partitioned table needs one")
        stray = accepted.filter(~pl.col("trading_day").is_in(days))
        if stray.height:
            found = sorted(set(stray["trading_day"].to_list()), key=str)[:5]
            raise ValueError(
                f"{table}: {stray.height} rows have trading_day {found} outside the partition {days}; a re-run "
                "would not replace them. Write each row under its own trading day."
            )
        if schema == "raw" and list(accepted.columns) != list(RAW_COLUMNS[name]):
            raise ValueError(
                f"{table}: columns {accepted.columns} differ from the contract {list(RAW_COLUMNS[name])}; "
                "pass the `accepted` frame of pipeline.contract.validation.validate"
            )
        source_table = source_table or name
        rejected_frame = self._conform_rejected(rejected, days)

        with self.transaction() as con:
            self._create_if_new(con, table, accepted)
            deleted = self._delete_days(con, table, days)
            self._insert(con, table, accepted)
            rejected_deleted = self._delete_days(con, QUARANTINE_TABLE, days, source_table)
            if rejected_frame.height:
                self._insert(con, QUARANTINE_TABLE, rejected_frame.with_columns(source_table=pl.lit(source_table)))
        return WriteStats(
            table=table,
            trading_days=tuple(days),
            rows_deleted=deleted,
            rows_inserted=accepted.height,
            rejected_deleted=rejected_deleted,
            rejected_inserted=rejected_frame.height,
        )

    @staticmethod
    def _conform_rejected(rejected: pl.DataFrame | None, days: list[date]) -> pl.DataFrame:
        if rejected is None:
            return pl.DataFrame(schema=QUARANTINE_COLUMNS)
        fix = "pass the `rejected` frame of pipeline.contract.validation.validate"
        missing = [c for c in QUARANTINE_COLUMNS if c not in rejected.columns]
        if missing:
            raise ValueError(f"rejected rows lack columns {missing}; {fix}")
        wrong = {c: str(rejected.schema[c]) for c, t in QUARANTINE_COLUMNS.items() if rejected.schema[c] != t}
        if wrong:
            raise ValueError(f"rejected rows have columns of the wrong type {wrong}, expected {QUARANTINE_COLUMNS}; {fix}")
        frame = rejected.select(list(QUARANTINE_COLUMNS))
        # source_table is set from the write; a null elsewhere is a row no re-run could find or explain.
        nulls = [c for c in QUARANTINE_COLUMNS if c != "source_table" and frame[c].null_count()]
        if nulls:
            raise ValueError(f"rejected rows have nulls in {nulls}; {fix}")
        if frame.filter(~pl.col("trading_day").is_in(days)).height:
            raise ValueError(f"rejected rows have a trading_day outside the partition {days}")
        return frame

    @staticmethod
    def _delete_days(
        con: duckdb.DuckDBPyConnection, table: str, days: list[date], source_table: str | None = None
    ) -> int:
        sql = f"DELETE FROM {table} WHERE list_contains(?::DATE[], trading_day)"
        params: list[Any] = [days]
        if source_table is not None:
            sql += " AND source_table = ?"
            params.append(source_table)
        return _scalar(con, sql, params)

    @staticmethod
    def _table_exists(con: duckdb.DuckDBPyConnection, schema: str, name: str) -> bool:
        sql = "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?"
        return bool(_scalar(con, sql, [schema, name]))

    def append(self, table: str, frame: pl.DataFrame) -> int:
        """Insert rows into a non-partitioned use of a table (e.g. one model in models.registry); creates it if new."""
        schema, _ = _check_table_name(table)
        if schema in ("raw", "quarantine"):
            raise ValueError(
                f"{table}: raw and quarantine rows are written per trading day, with their validation; use "
                "write_partition(raw_table, days, accepted, rejected)"
            )
        with self.transaction() as con:
            self._create_if_new(con, table, frame)
            self._insert(con, table, frame)
        return frame.height

    def _create_if_new(self, con: duckdb.DuckDBPyConnection, table: str, frame: pl.DataFrame) -> None:
        """Create a derived table from `frame`'s schema. A derived table that exists gains the columns `frame`
        adds when `frame` keeps every column it has (null in its older rows), so a lake written before a column was
        added keeps working; a frame that drops a column is refused by the insert."""
        schema, name = _check_table_name(table)
        exists = self._table_exists(con, schema, name)
        if exists and schema not in _AUTO_CREATE_SCHEMAS:
            return
        if schema not in _AUTO_CREATE_SCHEMAS:
            raise ValueError(f"{table} does not exist; raw tables are fixed by pipeline.contract.schemas")
        con.register(_STAGING, frame)
        if not exists:
            con.execute(f"CREATE TABLE {table} AS SELECT * FROM {_STAGING} LIMIT 0")
        else:
            have = {r[0] for r in con.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = ? AND table_name = ?",
                [schema, name]).fetchall()}
            if have <= set(frame.columns):
                for column, sql_type, *_ in con.execute(f"DESCRIBE SELECT * FROM {_STAGING}").fetchall():
                    if column not in have:
                        con.execute(f'ALTER TABLE {table} ADD COLUMN "{column}" {sql_type}')
        con.unregister(_STAGING)

    @staticmethod
    def _insert(con: duckdb.DuckDBPyConnection, table: str, frame: pl.DataFrame) -> None:
        # Arrow scan of the polars frame (zero-copy); BY NAME so column order in the frame does not matter.
        # On error the view is left registered: the aborted transaction refuses unregister, and close drops it.
        con.register(_STAGING, frame)
        try:
            con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM {_STAGING}")
        except duckdb.BinderException as exc:
            raise ValueError(f"{table}: the frame's columns {frame.columns} do not fit the table: {exc}") from exc
        except duckdb.ConversionException as exc:
            raise ValueError(f"{table}: a value of the frame does not fit its column: {exc}") from exc
        con.unregister(_STAGING)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        """Run one statement (e.g. an UPDATE of a model's status) in its own transaction."""
        with self.connect() as con:
            con.execute(sql, list(params))

    def query(self, sql: str, params: Sequence[Any] = ()) -> pl.DataFrame:
        """Run a SELECT and return its rows as a polars frame (timestamps in UTC)."""
        with self.connect() as con:
            return con.sql(sql, params=list(params) or None).pl()

    def read_partition(
        self, table: str, trading_days: Sequence[date], columns: Sequence[str] | None = None
    ) -> pl.DataFrame:
        """The rows of `trading_days` in `table`, in insertion order."""
        _check_table_name(table)
        days = _day_list(trading_days)
        selected = "*" if not columns else ", ".join(f'"{c}"' for c in columns)
        with self.connect() as con:
            self._require_table(con, table)
            try:
                return con.sql(
                    f"SELECT {selected} FROM {table} WHERE list_contains(?::DATE[], trading_day)", params=[days]
                ).pl()
            except duckdb.BinderException as exc:
                raise ValueError(f"{table}: cannot select columns {list(columns or [])}: {exc}") from exc

    def table_exists(self, table: str) -> bool:
        """Whether `<schema>.<name>` exists."""
        schema, name = _check_table_name(table)
        with self.connect() as con:
            return self._table_exists(con, schema, name)

    def row_count(self, table: str, trading_days: Sequence[date] | None = None) -> int:
        """Rows in `table`, or in its `trading_days` partitions."""
        _check_table_name(table)
        with self.connect() as con:
            self._require_table(con, table)
            if trading_days is None:
                return _scalar(con, f"SELECT count(*) FROM {table}", [])
            sql = f"SELECT count(*) FROM {table} WHERE list_contains(?::DATE[], trading_day)"
            return _scalar(con, sql, [_day_list(trading_days)])

    def _require_table(self, con: duckdb.DuckDBPyConnection, table: str) -> None:
        schema, name = _check_table_name(table)
        if not self._table_exists(con, schema, name):
            raise ValueError(
                f"{table} does not exist in {self.path}: materialize the asset that writes it first"
            )
