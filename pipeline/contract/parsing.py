"""Non-strict parsing of landed files into raw-table dtypes, with a per-row `_parse_error`.

Landed files are read as text (CSV) or as whatever Parquet typed them, and every value is cast non-strictly: a value
that does not parse becomes null and the row gets `_parse_error` = "bad value for column X: 'abc'", so validation
quarantines the row with its reason instead of the row silently disappearing.
"""

from __future__ import annotations

import polars as pl

from pipeline.contract.calendar import NY_TZ
from pipeline.contract.schemas import RAW_COLUMNS, RAW_DEFAULTS, UTC_TS

PARSE_ERROR = "_parse_error"

_ISO_TS_FORMAT = "%Y-%m-%dT%H:%M:%S%.f%z"
_INT_RE = r"^-?\d+$"
_DATE_RE = r"^\d{4}-\d{2}-\d{2}$"


def _text(col: str) -> pl.Expr:
    return pl.col(col).cast(pl.Utf8).str.strip_chars()


def _date_only(col: str) -> pl.Expr:
    """True where a text ts is a bare date (daily bars)."""
    return _text(col).str.contains(_DATE_RE).fill_null(False)


def ts_expr(col: str, dtype: pl.DataType, allow_date_only: bool) -> pl.Expr:
    """Parse `col` into UTC microsecond timestamps; null where it does not parse.

    Text may be ISO-8601 with an offset ('Z' allowed, 'T' or space separator) or epoch nanoseconds. A bare date is
    accepted only where `allow_date_only` (daily bars) and becomes midnight New York time, so it stays on its own
    trading day. Naive timestamps are rejected: without an offset the instant is ambiguous.
    """
    if isinstance(dtype, pl.Datetime):
        if dtype.time_zone is None:
            return pl.lit(None, UTC_TS)
        return pl.col(col).dt.convert_time_zone("UTC").cast(UTC_TS)
    if dtype.is_integer():
        return pl.from_epoch(pl.col(col), time_unit="ns").dt.replace_time_zone("UTC").cast(UTC_TS)
    if dtype == pl.Date:
        return _midnight_new_york(pl.col(col)) if allow_date_only else pl.lit(None, UTC_TS)
    text = _text(col)
    iso = (
        text.str.replace(r"^(\d{4}-\d{2}-\d{2})[ T]", "${1}T")
        .str.replace(r"Z$", "+00:00")
        .str.to_datetime(_ISO_TS_FORMAT, time_zone="UTC", time_unit="us", strict=False)
    )
    epoch_ns = pl.from_epoch(text.cast(pl.Int64, strict=False), time_unit="ns").dt.replace_time_zone("UTC")
    parsed = pl.when(text.str.contains(_INT_RE)).then(epoch_ns.cast(UTC_TS)).otherwise(iso)
    if allow_date_only:
        bare = _midnight_new_york(text.str.to_date("%Y-%m-%d", strict=False))
        parsed = pl.when(_date_only(col)).then(bare).otherwise(parsed)
    return parsed


def _midnight_new_york(day: pl.Expr) -> pl.Expr:
    return day.cast(pl.Datetime("us")).dt.replace_time_zone(NY_TZ).dt.convert_time_zone("UTC")


def _value_expr(col: str, dtype: pl.DataType, target: pl.DataType) -> pl.Expr:
    if target == pl.Float64:
        if dtype.is_numeric():
            return pl.col(col).cast(pl.Float64)
        return _text(col).cast(pl.Float64, strict=False)
    if target == pl.Boolean:
        if dtype == pl.Boolean:
            return pl.col(col)
        text = _text(col).str.to_lowercase()
        return pl.when(text.is_in(["true", "1", "t", "yes"])).then(True).when(
            text.is_in(["false", "0", "f", "no"])).then(False).otherwise(None)
    if target == pl.Date:
        if dtype == pl.Date:
            return pl.col(col)
        if isinstance(dtype, pl.Datetime):
            return pl.col(col).dt.date()
        return _text(col).str.to_date("%Y-%m-%d", strict=False)
    return pl.col(col).cast(pl.Utf8)


def _bad_value_message(col: str) -> pl.Expr:
    return pl.format("bad value for column {}: '{}'", pl.lit(col), pl.col(col).cast(pl.Utf8))


def _daily_expr(frame: pl.DataFrame) -> pl.Expr:
    """True where a bars row carries a date-only ts (a daily bar)."""
    dtype = frame.schema.get("ts")
    if dtype == pl.Utf8:
        return _date_only("ts")
    return pl.lit(dtype == pl.Date)


def parse_landed(table: str, frame: pl.DataFrame, skip: set[str]) -> pl.DataFrame:
    """Cast the table's columns present in `frame` (all but `skip`); add `_parse_error`.

    Columns of the contract missing from `frame` come back as nulls (the caller has checked the required ones).
    """
    allow_date_only = table == "bars"
    daily = _daily_expr(frame) if allow_date_only and "ts" in frame.columns else pl.lit(False)
    exprs: list[pl.Expr] = []
    errors: list[pl.Expr] = []
    for col, target in RAW_COLUMNS[table].items():
        if col in skip:
            continue
        if col not in frame.columns:
            exprs.append(pl.lit(RAW_DEFAULTS.get(table, {}).get(col), target).alias(col))
            continue
        dtype = frame.schema[col]
        if col == "ts":
            parsed = ts_expr(col, dtype, allow_date_only)
        elif col == "interval":
            # A daily bar may leave its interval blank; a date-only ts with an intraday interval is contradictory.
            interval = pl.col(col).cast(pl.Utf8).str.strip_chars()
            parsed = pl.when(daily & interval.is_null()).then(pl.lit("1d")).otherwise(interval)
            errors.append(
                pl.when(daily & interval.is_not_null() & (interval != "1d")).then(
                    pl.format("bad value for column interval: '{}' (a date-only ts is a daily bar: use '1d')", interval)
                )
            )
        else:
            parsed = _value_expr(col, dtype, target)
        was_value = pl.col(col).is_not_null() & (pl.col(col).cast(pl.Utf8).str.strip_chars() != "")
        errors.append(pl.when(was_value & parsed.is_null()).then(_bad_value_message(col)))
        if (default := RAW_DEFAULTS.get(table, {}).get(col)) is not None:
            parsed = parsed.fill_null(default)  # a blank cell of a defaulted column means "not given"
        exprs.append(parsed.alias(col))
    joined = pl.concat_str(errors, separator="; ", ignore_nulls=True) if errors else pl.lit("")
    error = pl.when(joined != "").then(joined).otherwise(pl.lit(None, pl.Utf8)).alias(PARSE_ERROR)
    return frame.select([*exprs, error])
