"""Row validation of raw market data: split a source's frame into accepted rows and quarantined rows.

pandera (polars backend, on an eager DataFrame so data checks really run) holds the contract: dtypes,
nullability and the named row checks of `validation_schemas`. Its lazy failure cases give, per failing row,
the name of each check the row broke; a row failing several checks is quarantined once with all reasons joined.
Invariant: rows_read == len(accepted) + len(rejected), always.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime

import pandera.errors
import pandera.polars as pa
import polars as pl
from pandera.config import ValidationDepth, config_context

from pipeline.contract.calendar import TradingSession
from pipeline.contract.parsing import PARSE_ERROR, ts_expr
from pipeline.contract.schemas import QUARANTINE_COLUMNS, RAW_COLUMNS, UTC_TS, with_defaults
from pipeline.contract.validation_schemas import raw_schema

_ROW = "_row"
_REASON = "reason"
_ORDER = "_order"


@dataclass(frozen=True)
class ValidationResult:
    """The outcome of validating one table for one session."""

    table: str
    trading_day: date
    accepted: pl.DataFrame
    rejected: pl.DataFrame
    rows_read: int

    @property
    def rows_accepted(self) -> int:
        return self.accepted.height

    @property
    def rows_rejected(self) -> int:
        return self.rejected.height

    def reason_counts(self) -> dict[str, int]:
        """How many rows were rejected for each reason (a row with several reasons counts once per reason)."""
        if self.rejected.is_empty():
            return {}
        counts = self.rejected.select(pl.col(_REASON).str.split("; ").explode()).to_series().value_counts()
        return dict(sorted(zip(counts[_REASON], counts["count"], strict=True), key=lambda kv: -kv[1]))


def rejected_share(result: ValidationResult) -> float:
    """Share of the rows read that were quarantined (0.0 for an empty input)."""
    return result.rows_rejected / result.rows_read if result.rows_read else 0.0


def _check_table_and_columns(table: str, frame: pl.DataFrame) -> None:
    if table not in RAW_COLUMNS:
        raise ValueError(f"unknown raw table {table!r}; expected one of {sorted(RAW_COLUMNS)}")
    missing = [c for c in RAW_COLUMNS[table] if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{table}: the source frame lacks columns {missing}; a source must return all of "
            f"{list(RAW_COLUMNS[table])} (use nulls for values it does not have)"
        )


def _coerce(table: str, frame: pl.DataFrame) -> tuple[pl.DataFrame, pl.Expr | None]:
    """Cast columns whose dtype differs from the contract, non-strictly; returns the frame and a per-row error."""
    exprs: list[pl.Expr] = []
    errors: list[pl.Expr] = []
    for column, dtype in RAW_COLUMNS[table].items():
        have = frame.schema[column]
        if have == dtype:
            exprs.append(pl.col(column))
            continue
        if isinstance(have, pl.Datetime):
            if have.time_zone is None:
                raise ValueError(
                    f"{table}.{column} holds time-zone-naive timestamps; the source must attach a time zone "
                    "(e.g. .dt.replace_time_zone('UTC')) so they can be stored as UTC"
                )
            cast = pl.col(column).dt.convert_time_zone("UTC").dt.cast_time_unit("us")
        elif dtype == UTC_TS:
            # The landed files' rules, value by value: polars' own parser infers one format from the first value,
            # so a naive first value would be taken as UTC and every offset-carrying one after it rejected.
            cast = ts_expr(column, have, allow_date_only=table == "bars")
        else:
            cast = pl.col(column).cast(dtype, strict=False)
        expected = "an ISO-8601 timestamp with a UTC offset or epoch nanoseconds" if dtype == UTC_TS else f"a {dtype}"
        exprs.append(cast.alias(column))
        errors.append(
            pl.when(pl.col(column).is_not_null() & cast.is_null()).then(
                pl.format(f"{column} is not {expected}: '{{}}'", pl.col(column).cast(pl.Utf8))
            )
        )
    if PARSE_ERROR in frame.columns:
        errors.insert(0, pl.col(PARSE_ERROR).cast(pl.Utf8))
    error = pl.concat_str(errors, separator="; ", ignore_nulls=True) if errors else None
    return frame.select(exprs), error


def _failure_reasons(schema: pa.DataFrameSchema, typed: pl.DataFrame) -> pl.DataFrame:
    """(row, reason, order) for every failed check of every row, from pandera's lazy failure cases."""
    empty = pl.DataFrame(schema={_ROW: pl.Int64, _REASON: pl.Utf8, _ORDER: pl.Int64})
    try:
        # Validation must run with data checks whatever PANDERA_* environment variables say.
        with config_context(validation_enabled=True, validation_depth=ValidationDepth.SCHEMA_AND_DATA):
            schema.validate(typed, lazy=True)
    except pandera.errors.SchemaErrors as exc:
        cases = exc.failure_cases
    else:
        return empty
    without_row = cases.filter(pl.col("index").is_null())
    if without_row.height:
        # A failure with no row (wrong dtype after coercion, a check that raised) is a bug here, not bad data.
        raise RuntimeError(f"{schema.name}: validation failed outside any row:\n{without_row}")
    # pandera's nullability check also fails NaN in float columns; say so in the reason.
    floats = [c for c, t in typed.schema.items() if t.is_float()]
    reason = (
        pl.when((pl.col("check") == "not_nullable") & pl.col("column").is_in(floats))
        .then(pl.format("{} is null or NaN", pl.col("column")))
        .when(pl.col("check") == "not_nullable")
        .then(pl.format("{} is null", pl.col("column")))
        .otherwise(pl.col("check"))
    )
    return cases.select(
        pl.col("index").cast(pl.Int64).alias(_ROW),
        reason.alias(_REASON),
        # Column failures first, in schema order, then the frame-wide checks: a stable, readable join order.
        (pl.col("schema_context") == "DataFrameSchema").cast(pl.Int64).alias(_ORDER),
    )


def _payload(frame: pl.DataFrame) -> pl.Expr:
    """The original row as a JSON object; NaN/inf written as strings (JSON numbers cannot hold them)."""
    columns = []
    for name, dtype in frame.schema.items():
        if name == PARSE_ERROR:
            continue
        col = pl.col(name)
        if dtype.is_float() and not frame[name].is_finite().fill_null(True).all():
            col = col.cast(pl.Utf8)
        columns.append(col)
    return pl.struct(columns).struct.json_encode()


def validate(table: str, frame: pl.DataFrame, session: TradingSession) -> ValidationResult:
    """Split one session's raw `frame` for `raw.<table>` into accepted rows and quarantined rows.

    Missing contract columns raise ValueError. A column of another dtype is cast; values that do not cast reject
    their row. A `_parse_error` column (set by file sources) rejects its non-null rows with that text.
    """
    frame = with_defaults(table, frame)
    _check_table_and_columns(table, frame)
    day = session.trading_day
    if frame.is_empty():
        accepted = pl.DataFrame(schema=RAW_COLUMNS[table])
        return ValidationResult(table, day, accepted, pl.DataFrame(schema=QUARANTINE_COLUMNS), 0)
    typed, coerce_error = _coerce(table, frame)
    schema = raw_schema(table, session)
    reasons = _failure_reasons(schema, typed)
    if coerce_error is not None:
        early = (
            frame.select(coerce_error.alias(_REASON))
            .with_row_index(_ROW)
            .filter(pl.col(_REASON).is_not_null() & (pl.col(_REASON) != ""))
            .select(pl.col(_ROW).cast(pl.Int64), _REASON, pl.lit(-1, pl.Int64).alias(_ORDER))
        )
        reasons = pl.concat([early, reasons])

    if reasons.is_empty():
        return ValidationResult(table, day, typed, pl.DataFrame(schema=QUARANTINE_COLUMNS), frame.height)

    per_row = (
        reasons.with_row_index("_seq")
        .sort(_ROW, _ORDER, "_seq")
        .group_by(_ROW, maintain_order=True)
        .agg(pl.col(_REASON).unique(maintain_order=True).str.join("; "))
    )
    bad = pl.Series(_ROW, per_row[_ROW])
    is_bad = pl.int_range(pl.len(), dtype=pl.Int64).is_in(bad.implode())
    accepted = typed.filter(~is_bad)
    original = frame.with_row_index(_ROW).with_columns(pl.col(_ROW).cast(pl.Int64))
    rejected = (
        original.join(per_row, on=_ROW, how="inner")
        .sort(_ROW)
        .select(
            pl.lit(table).alias("source_table"),
            pl.lit(day).alias("trading_day"),
            pl.col(_REASON),
            _payload(frame).alias("payload"),
            pl.lit(datetime.now(UTC)).dt.cast_time_unit("us").alias("ingested_at"),
        )
    )
    return ValidationResult(table, day, accepted, rejected, frame.height)
