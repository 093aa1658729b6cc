"""The file market source: CSV and Parquet files dropped into `<landing_dir>/<table>/` (DESIGN §3, file imports).

A file may also sit in a day folder, `<landing_dir>/<table>/<YYYY-MM-DD>/`: it is read only for that trading day,
so a folder that grows every day (the live option-chain collector's) costs a day's ingest that day's files, not all
of them. Its rows on another day are not dropped: validation quarantines them ("trading_day is not ...").

No landed row is lost for its date: a row dated on a weekend or exchange holiday (and every row of such a day's
folder) is filed under the last trading day before it (`filing_day`), whose ingest quarantines it with the reason
"not an XNYS trading day". That session's partition exists whenever the row lands, and only it reads the row.

A file's rows are `source` "files" unless it has a `source` column of its own (the collector's files name the broker
they came from).

Values are parsed non-strictly (see `pipeline.contract.parsing`): a bad value keeps its row, with nulls and a `_parse_error`
reason, so validation quarantines it. The returned frames therefore carry the raw table's columns plus the Utf8
column `_parse_error` (null when the row parsed cleanly).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import date
from pathlib import Path

import polars as pl

from pipeline.contract.calendar import (
    CALENDAR_END,
    CALENDAR_START,
    NY_TZ,
    TradingSession,
    is_trading_day,
    previous_trading_day,
)
from pipeline.contract.parsing import PARSE_ERROR, parse_landed, ts_expr
from pipeline.contract.schemas import RAW_COLUMNS, RAW_TABLES, empty_frame
from pipeline.sources.base import SourceError

logger = logging.getLogger(__name__)

LANDING_SUFFIXES = (".csv", ".parquet")
# Columns a landed file may leave out (they come back null); every other contract column is required.
_OPTIONAL: dict[str, frozenset[str]] = {
    "trades": frozenset({"exchange", "conditions"}),
    "quotes": frozenset(),
    "bars": frozenset(),
    "option_snapshots": frozenset(
        {"underlying_price", "last", "volume", "open_interest", "iv", "delta", "gamma", "theta", "vega",
         "reconstructed", "null_reason", "delayed"}
    ),
}
# Set by the source, never read from the file.
_SET_BY_SOURCE = frozenset({"trading_day"})
# A file may say where its rows came from (the collector writes the broker's name); rows that do not are `files`.
_NAMED_SOURCE = "source"


def required_columns(table: str) -> list[str]:
    """Columns a landed file of `table` must have."""
    optional = _OPTIONAL[table] | _SET_BY_SOURCE | {_NAMED_SOURCE}
    return [c for c in RAW_COLUMNS[table] if c not in optional]


def _check_table(table: str) -> None:
    if table not in RAW_TABLES:
        raise SourceError(f"unknown table {table!r}: landed files go under one of {list(RAW_TABLES)}")


def _is_landed(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in LANDING_SUFFIXES and not path.name.startswith(".")


def filing_day(day: date) -> date:
    """The trading day whose ingest reads a landed row dated `day`: `day` itself when XNYS trades then, else the
    session before it (days outside the calendar's span are their own: no partition reads them)."""
    if is_trading_day(day) or not CALENDAR_START < day <= CALENDAR_END:
        return day
    return previous_trading_day(day)


def not_a_trading_day(day: date | str) -> str:
    """The quarantine reason of a landed row dated on a day XNYS does not trade."""
    return f"{day} is not an XNYS trading day"


def _reject_with(frame: pl.DataFrame, when: pl.Expr, reason: pl.Expr) -> pl.DataFrame:
    """Add `reason` to the parse error of the rows where `when` holds (validation quarantines them with it)."""
    joined = pl.concat_str([pl.col(PARSE_ERROR), reason], separator="; ", ignore_nulls=True)
    return frame.with_columns(pl.when(when).then(joined).otherwise(pl.col(PARSE_ERROR)).alias(PARSE_ERROR))


def top_level_files(landing_dir: Path, table: str) -> list[Path]:
    """The files directly under landing/<table>/ (day folders not included)."""
    folder = landing_dir / table
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if _is_landed(p))


def day_folder_date(folder: Path) -> date | None:
    """The date a day folder (`YYYY-MM-DD`) is named for, or None for any other folder."""
    try:
        return date.fromisoformat(folder.name) if folder.is_dir() and len(folder.name) == 10 else None
    except ValueError:
        return None


def day_folder_files(landing_dir: Path, table: str, day: date) -> list[Path]:
    """The files of landing/<table>/<day>/."""
    folder = Path(landing_dir) / table / day.isoformat()
    return sorted(p for p in folder.iterdir() if _is_landed(p)) if folder.is_dir() else []


def _read(path: Path, columns: list[str] | None = None) -> pl.DataFrame:
    """Read a landed file: CSV as all-text, Parquet with its own types. Empty files give 0 rows and a warning."""
    if path.stat().st_size == 0:
        logger.warning("landed file %s is empty (0 bytes); it contributes no rows", path)
        return pl.DataFrame()
    try:
        if path.suffix.lower() == ".csv":
            frame = pl.read_csv(path, infer_schema=False, columns=columns)
        else:
            frame = pl.read_parquet(path, columns=columns)
    except pl.exceptions.ColumnNotFoundError as exc:
        raise SourceError(f"landed file {path} has no column {columns}: {exc}") from exc
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise SourceError(
            f"could not read landed file {path}: {type(exc).__name__}: {exc}. "
            "Replace it with a valid UTF-8 CSV (header row) or Parquet file, or remove it."
        ) from exc
    if frame.height == 0:
        logger.warning("landed file %s has a header but no rows; it contributes no rows", path)
    return frame


def _no_rows(table: str) -> pl.DataFrame:
    return empty_frame(table).with_columns(pl.lit(None, pl.Utf8).alias(PARSE_ERROR))


def _trading_day(columns: Sequence[str]) -> pl.Expr:
    """The trading day of a parsed row: the New York date of its ts, except that a daily bar stamped at midnight
    UTC names its session by its UTC date (in New York it is still the evening before: filed there, day D's row
    would carry D+1's close, and a Monday's bar would land on a Sunday)."""
    day = pl.col("ts").dt.convert_time_zone(NY_TZ).dt.date()
    if "interval" not in columns:
        return day
    utc = pl.col("ts").dt.convert_time_zone("UTC")
    utc_midnight = (pl.col("interval").str.strip_chars() == "1d") & (utc.dt.time() == pl.time(0))
    return pl.when(utc_midnight).then(utc.dt.date()).otherwise(day)


def _with_trading_day(frame: pl.DataFrame) -> pl.DataFrame:
    """Add the trading day of each row; rows whose ts failed get the file's first day. Rows dated on a day XNYS
    does not trade get that as their reason.

    Assigning unparseable rows to one covered day sends each of them to quarantine exactly once.
    """
    frame = frame.with_columns(_trading_day(frame.columns).alias("trading_day"))
    first_day = frame["trading_day"].min()
    frame = frame.with_columns(pl.col("trading_day").fill_null(first_day))
    off_days = [day for day in frame["trading_day"].unique().to_list() if not is_trading_day(day)]
    reason = pl.format(not_a_trading_day("{}"), pl.col("trading_day"))
    return _reject_with(frame, pl.col("trading_day").is_in(off_days), reason)


class FileSource:
    """Reads `landing/<table>/*.csv|*.parquet`; `fetch` returns the rows of one trading day."""

    name = "files"

    def __init__(self, landing_dir: str | Path) -> None:
        self.landing_dir = Path(landing_dir)
        # Per table: the landed files' (path, mtime, size) and their parsed rows. A range backfill fetches one
        # day at a time from the same files; this reads and parses them once, and again only when they change.
        self._parsed: dict[str, tuple[tuple[tuple[Path, int, int], ...], pl.DataFrame]] = {}

    def __repr__(self) -> str:
        return f"FileSource(landing_dir={str(self.landing_dir)!r})"

    def landing_files(self, table: str) -> list[Path]:
        """The landed files of `table`, sorted by name."""
        _check_table(table)
        return top_level_files(self.landing_dir, table)

    def read_file(self, table: str, path: Path) -> pl.DataFrame:
        """One landed file parsed to the table's columns plus `trading_day` and `_parse_error`."""
        raw = _read(path)
        if raw.width == 0 or raw.height == 0:
            return _no_rows(table)
        missing = [c for c in required_columns(table) if c not in raw.columns]
        if missing:
            raise SourceError(
                f"landed file {path} lacks required columns {missing} for table {table!r}; it has {raw.columns}. "
                f"Expected at least {required_columns(table)} (see DESIGN §3)."
            )
        parsed = parse_landed(table, raw, skip=set(_SET_BY_SOURCE))
        if parsed["ts"].null_count() == parsed.height:
            # No row names its trading day, so no partition would fetch (or quarantine) any of them.
            raise SourceError(
                f"landed file {path}: no row has a parseable ts (e.g. {raw['ts'][0]!r}), so none can be filed "
                "under a trading day. Write ts as ISO-8601 with an offset (2024-07-05T09:30:00-04:00) or epoch ns."
            )
        named = pl.col(_NAMED_SOURCE).str.strip_chars()
        source = pl.when(named != "").then(named).otherwise(pl.lit(self.name))
        return _with_trading_day(parsed).with_columns(source.alias(_NAMED_SOURCE))

    def fetch(self, table: str, session: TradingSession, symbols: Sequence[str]) -> pl.DataFrame:
        """Rows of every landed file of `table` whose New York date is `session.trading_day`, and those dated on
        the days without a session after it (each with its reason, for quarantine).

        `symbols` filters by symbol (by underlying for option_snapshots); an empty sequence keeps all symbols.
        Rows with a null symbol are kept so validation can quarantine them.
        """
        day = session.trading_day
        landed = self._landed_rows(table)
        filed_here = [d for d in landed["trading_day"].unique().to_list() if filing_day(d) == day]
        parts = [landed.filter(pl.col("trading_day").is_in(filed_here))]
        columns = [*RAW_COLUMNS[table], PARSE_ERROR]
        for folder_day in self._day_folders_filed_under(table, day):
            # Every row of the day folder, whatever its ts says: validation quarantines those of another day.
            for path in day_folder_files(self.landing_dir, table, folder_day):
                rows = self.read_file(table, path).select(columns)
                if folder_day != day:
                    rows = _reject_with(rows, pl.lit(True), pl.lit(f"in day folder {not_a_trading_day(folder_day)}"))
                parts.append(rows)
        frame = pl.concat(parts)
        if symbols:
            key = "underlying" if table == "option_snapshots" else "symbol"
            frame = frame.filter(pl.col(key).is_null() | pl.col(key).is_in(list(symbols)))
        return frame

    def _day_folders_filed_under(self, table: str, day: date) -> list[date]:
        """`day`'s own folder and the folders of the days without a session that follow it."""
        folder = self.landing_dir / table
        others = (day_folder_date(sub) for sub in folder.iterdir()) if folder.is_dir() else iter(())
        return [day, *sorted(d for d in others if d is not None and d != day and filing_day(d) == day)]

    def _landed_rows(self, table: str) -> pl.DataFrame:
        """Every landed file of `table` parsed and concatenated; reused while no file was added, changed or removed."""
        paths = self.landing_files(table)
        signature = tuple((p, p.stat().st_mtime_ns, p.stat().st_size) for p in paths)
        cached = self._parsed.get(table)
        if cached is not None and cached[0] == signature:
            return cached[1]
        columns = [*RAW_COLUMNS[table], PARSE_ERROR]
        frames = [self.read_file(table, path).select(columns) for path in paths]
        rows = pl.concat(frames) if frames else _no_rows(table)
        self._parsed[table] = (signature, rows)
        return rows


def _header(path: Path) -> list[str]:
    """The column names of a landed file (nothing for an empty or unreadable one: `_read` reports those)."""
    try:
        if path.suffix.lower() == ".csv":
            return pl.read_csv(path, n_rows=0, infer_schema=False).columns
        return list(pl.read_parquet_schema(path))
    except (pl.exceptions.PolarsError, OSError):
        return []


def file_trading_days(table: str, path: Path) -> set[date]:
    """The days of one landed file's rows (by the rule of `_trading_day`; `filing_day` says which ingest reads them).

    Raises SourceError when the file cannot be read or no row has a parseable ts (it would cover no day).
    """
    # The sensor calls this on every tick: read ts (and a bar's interval, which can move its day) and nothing else.
    wanted = ["ts", "interval"] if table == "bars" and "interval" in _header(path) else ["ts"]
    frame = _read(path, columns=wanted)
    if frame.height == 0:
        return set()
    parsed = frame.select(ts_expr("ts", frame.schema["ts"], allow_date_only=table == "bars").alias("ts"),
                          *([pl.col("interval").cast(pl.Utf8)] if table == "bars" and "interval" in frame.columns
                            else []))
    days = set(parsed.select(_trading_day(parsed.columns))["ts"].drop_nulls().unique().to_list())
    if not days:
        raise SourceError(f"no row of landed file {path} has a parseable ts; it covers no trading day")
    return days


def landing_partitions(landing_dir: str | Path) -> dict[str, set[date]]:
    """Which trading days' ingests read the landed files, per table (every table a key; reads only the ts column,
    and nothing of a day folder's files: their folder names the day). A weekend's rows count for the Friday before.

    Files that cannot be read, or lack a parseable ts, are skipped with a warning: `fetch` reports them in full.
    """
    covered: dict[str, set[date]] = {}
    for table in RAW_TABLES:
        days: set[date] = set()
        for path in top_level_files(Path(landing_dir), table):
            try:
                days.update(filing_day(day) for day in file_trading_days(table, path))
            except SourceError as exc:
                logger.warning("skipping %s when listing landed partitions: %s", path, exc)
        folder = Path(landing_dir) / table
        for sub in folder.iterdir() if folder.is_dir() else []:
            if (day := day_folder_date(sub)) is not None and day_folder_files(Path(landing_dir), table, day):
                days.add(filing_day(day))
        covered[table] = days
    return covered
