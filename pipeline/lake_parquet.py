"""The lake past one file: warehouse tables as Hive-partitioned Parquet that DuckDB queries in place.

Layout: `<root>/<schema>/<table>/trading_day=YYYY-MM-DD/part-0.parquet`, one folder per trading day, so object
storage can hold years of history and a query of a range opens only the folders of its days:

    SELECT * FROM read_parquet('<root>/raw/trades/**/*.parquet', hive_partitioning = true)
    WHERE trading_day BETWEEN DATE '2024-07-01' AND DATE '2024-07-31'

Each file keeps every column of the table, `trading_day` included, so a copied file still says its day and a
read returns the table's columns in the table's order. An export mirrors the warehouse over a range of days: each
day that has rows gets its folder written in a staging folder and renamed into place (the old folder is renamed
away first and deleted after), a day without rows loses its folder, so a re-export of the same range is
idempotent and a reader never sees a half-written or doubled day. Writing needs a local or mounted file system
(renames); reading works on any path DuckDB can glob, `s3://` included once its httpfs extension is loaded.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path

import duckdb
import polars as pl

from pipeline.contract.schemas import RAW_TABLES
from pipeline.lake import Warehouse, lake_dir

__all__ = ["DayExport", "default_root", "export_range", "exportable_tables", "parquet_glob", "read_range"]

PARTITION_COLUMN = "trading_day"
# Staging and trash folders live beside the schemas, never under a table, so no table's glob ever matches them.
_STAGING = "_staging"
_PART_FILE = "part-0.parquet"
_DAY_FOLDER = re.compile(rf"/{PARTITION_COLUMN}=(\d{{4}}-\d{{2}}-\d{{2}})/")


@dataclass(frozen=True)
class DayExport:
    """What an export did to one day of one table: `rows` written, or the folder `removed` (no rows that day)."""

    table: str
    trading_day: date
    rows: int
    removed: bool = False


def default_root() -> Path:
    """`<data lake>/parquet`: where the CLI exports unless told otherwise."""
    return lake_dir() / "parquet"


def table_dir(root: str | Path, table: str) -> str:
    """`<root>/<schema>/<table>` of a `schema.table` name (a string, so `s3://...` roots keep their scheme)."""
    schema, _, name = table.partition(".")
    if not schema or not name:
        raise ValueError(f"table {table!r} is not '<schema>.<name>', e.g. 'raw.trades'")
    return f"{str(root).rstrip('/')}/{schema}/{name}"


def parquet_glob(root: str | Path, table: str) -> str:
    """The glob DuckDB reads `table` through: every day's files under its folder."""
    return f"{table_dir(root, table)}/**/*.parquet"


def exportable_tables(warehouse: Warehouse) -> list[str]:
    """The raw tables and every features table the warehouse holds (a features table exists once written)."""
    features = warehouse.query(
        "SELECT table_schema || '.' || table_name AS name FROM information_schema.tables "
        "WHERE table_schema = 'features' ORDER BY table_name"
    )["name"].to_list()
    return [*(f"raw.{name}" for name in RAW_TABLES), *features]


def export_range(
    warehouse: Warehouse, root: str | Path, first: date, last: date, tables: Sequence[str] | None = None
) -> list[DayExport]:
    """Make `<root>` hold exactly the warehouse rows of `tables` (default: `exportable_tables`) from `first` to
    `last`: one Parquet folder per trading day with rows, replaced whole; folders of days without rows removed.

    One day of one table is in memory (in DuckDB's COPY) at a time, whatever the range.
    """
    if last < first:
        raise ValueError(f"--to {last} is before --from {first}: name the range oldest day first")
    root = Path(root)
    done: list[DayExport] = []
    for table in tables if tables is not None else exportable_tables(warehouse):
        if not warehouse.table_exists(table):
            raise ValueError(f"{table} does not exist in {warehouse.path}: materialize it first, or leave it out")
        days = warehouse.query(
            f"SELECT DISTINCT trading_day FROM {table} WHERE trading_day BETWEEN ? AND ? ORDER BY trading_day",
            [first, last],
        )["trading_day"].to_list()
        for day in days:
            done.append(DayExport(table, day, _export_day(warehouse, root, table, day)))
        folders = _day_folders(root, table, first, last)
        for stale in sorted(folders.keys() - set(days)):
            shutil.rmtree(folders[stale])
            done.append(DayExport(table, stale, 0, removed=True))
    return done


def _day_folder(root: Path, table: str, day: date) -> Path:
    return Path(table_dir(root, table)) / f"{PARTITION_COLUMN}={day.isoformat()}"


def _day_folders(root: Path, table: str, first: date, last: date) -> dict[date, Path]:
    """The day folders of `table` under `root` from `first` to `last`."""
    found = {}
    for folder in Path(table_dir(root, table)).glob(f"{PARTITION_COLUMN}=*"):
        try:
            day = date.fromisoformat(folder.name.partition("=")[2])
        except ValueError:
            continue  # not a day folder of ours: leave it alone
        if first <= day <= last:
            found[day] = folder
    return found


def _export_day(warehouse: Warehouse, root: Path, table: str, day: date) -> int:
    """Write one day's rows to a staging folder, then swap it in for the day's folder. Returns the rows written."""
    staging = root / _STAGING / uuid.uuid4().hex
    staged, trash = staging / "day", staging / "old"
    staged.mkdir(parents=True)
    try:
        target = staged / _PART_FILE
        with warehouse.connect() as con:
            rows = con.execute(
                f"COPY (SELECT * FROM {table} WHERE trading_day = ?) TO '{_sql_path(target)}' (FORMAT parquet)",
                [day],
            ).fetchall()
        folder = _day_folder(root, table, day)
        folder.parent.mkdir(parents=True, exist_ok=True)
        if folder.exists():
            folder.rename(trash)
        staged.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return int(rows[0][0]) if rows else 0


def _sql_path(path: str | Path) -> str:
    return str(path).replace("'", "''")


def read_range(
    root: str | Path, table: str, first: date, last: date, columns: Sequence[str] | None = None
) -> pl.DataFrame:
    """The rows of `table` from `first` to `last` as the export wrote them: the warehouse's columns and types
    (TIMESTAMPTZ in UTC, trading_day a date).

    Only the files of those days are opened: the day folders are listed (no file is read to list them) and only
    theirs are handed to DuckDB, which would otherwise read the first file of the glob for the schema.
    """
    selected = "*" if not columns else ", ".join(f'"{c}"' for c in columns)
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        pattern = f"{table_dir(root, table)}/{PARTITION_COLUMN}=*/*.parquet"
        files = [str(f) for (f,) in con.execute("SELECT file FROM glob(?) ORDER BY file", [pattern]).fetchall()]
        if not files:
            raise ValueError(f"no Parquet files of {table} under {root}: export it first "
                             "(python -m pipeline.lake_parquet export --from ... --to ... --root ...)")
        # A range without days still needs one file for the columns; the WHERE then keeps no row of it.
        chosen = [f for f in files if first <= _file_day(f) <= last] or files[:1]
        sql = (
            f"SELECT {selected} FROM read_parquet(?, hive_partitioning = true, "
            f"hive_types = {{'{PARTITION_COLUMN}': DATE}}) WHERE {PARTITION_COLUMN} BETWEEN ? AND ?"
        )
        return con.sql(sql, params=[chosen, first, last]).pl()
    finally:
        con.close()


def _file_day(path: str) -> date:
    match = _DAY_FOLDER.search(path)
    if match is None:
        raise ValueError(f"{path} is not under a '{PARTITION_COLUMN}=YYYY-MM-DD' folder")
    return date.fromisoformat(match.group(1))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.lake_parquet", description="Export warehouse tables as Hive-partitioned Parquet."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    export = commands.add_parser("export", help="mirror a range of trading days of the warehouse into Parquet")
    export.add_argument("--from", dest="first", type=date.fromisoformat, required=True, help="first day, ISO")
    export.add_argument("--to", dest="last", type=date.fromisoformat, required=True, help="last day, ISO")
    export.add_argument("--root", type=Path, default=None, help="Parquet root; default <data lake>/parquet")
    export.add_argument("--warehouse", type=Path, default=None, help="DuckDB file; default the data lake's")
    export.add_argument("--table", action="append", dest="tables", help="schema.table; repeat; default all")
    args = parser.parse_args(argv)
    root = args.root or default_root()
    done = export_range(Warehouse(args.warehouse), root, args.first, args.last, args.tables)
    summary = {
        "root": str(root),
        "days_written": sum(not d.removed for d in done),
        "days_removed": sum(d.removed for d in done),
        "rows": sum(d.rows for d in done),
        "exports": [{**asdict(d), "trading_day": d.trading_day.isoformat()} for d in done],
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
