"""Metadata every warehouse asset reports: row counts, column schema, a markdown preview, the partition window.

Column descriptions come from their one home, the feature catalog and the raw-table docs, so the UI shows them on
the asset (definition metadata, before any run) and on every materialization. A run over a range of trading days
reports each day's figures on that day's partition (`report_partitions`), and what the run as a whole did once;
if a day fails, the days written before it are recorded as materialized all the same (`commit_days`).
Such a run writes and reports one day at a time and keeps no day's rows (`RunColumns` keeps the written columns),
so its memory is bounded by one day whatever the range.
"""

from collections.abc import Callable, Mapping, Sequence
from datetime import date
from typing import Any, TypeVar

import dagster as dg
import polars as pl

from pipeline.contract.column_docs import raw_column_description
from pipeline.contract.schemas import RAW_COLUMNS
from pipeline.features.catalog import Feature, features_of

PREVIEW_ROWS = 5
# Metadata as assets pass it to Dagster (dagster exports no name for its raw metadata value type).
Metadata = dict[str, Any]
T = TypeVar("T")


def partition_days(context: dg.AssetExecutionContext) -> list[date]:
    """The trading days of this run: one key, or every key of a single-run range backfill."""
    return [date.fromisoformat(key) for key in context.partition_keys]


def feature_description(feature: Feature) -> str:
    """One line for a catalog column: its formula, window (with unit) and value unit."""
    window = "" if feature.window.text == "-" else f"; window: {feature.window}"
    unit = "" if feature.unit == "-" else f"; unit: {feature.unit}"
    return f"{feature.formula}{window}{unit}"


def raw_column_descriptions(table: str) -> dict[str, str]:
    """{column: description} of raw.`table`, in contract order."""
    return {column: raw_column_description(table, column) for column in RAW_COLUMNS[table]}


def feature_column_descriptions(table: str) -> dict[str, str]:
    """{column: description} of a features table (`features.bars_1m`, ...), in catalog order."""
    return {f.name: feature_description(f) for f in features_of(table)}


def raw_table_schema(table: str) -> dg.TableSchema:
    """The column schema of raw.`table` before any run: contract names and types, with descriptions."""
    descriptions = raw_column_descriptions(table)
    return dg.TableSchema(
        columns=[dg.TableColumn(name, str(dtype), descriptions[name]) for name, dtype in RAW_COLUMNS[table].items()]
    )


def feature_table_schema(table: str) -> dg.TableSchema:
    """The column schema of a features table before any run: the catalog's names, with each value's unit as the
    type (the storage type is known once a run has written the table, and is on its materializations)."""
    return dg.TableSchema(
        columns=[dg.TableColumn(f.name, f.unit, feature_description(f)) for f in features_of(table)]
    )


def column_schema(frame: pl.DataFrame, descriptions: Mapping[str, str]) -> dg.TableSchema:
    """The written frame's columns and storage types, each with its description."""
    return dg.TableSchema(
        columns=[
            dg.TableColumn(name, str(dtype), descriptions.get(name)) for name, dtype in frame.schema.items()
        ]
    )


def preview_markdown(frame: pl.DataFrame, rows: int = PREVIEW_ROWS) -> str:
    """The first rows as a markdown table (polars has no to_markdown; pandas' needs tabulate)."""
    head = frame.head(rows)
    lines = ["| " + " | ".join(head.columns) + " |", "|" + "---|" * len(head.columns)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in head.iter_rows()]
    if frame.is_empty():
        lines.append("_no rows_")
    return "\n".join(lines)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value).replace("|", "\\|")


def window_metadata(days: Sequence[date]) -> Metadata:
    return {
        "first_trading_day": days[0].isoformat() if days else "",
        "last_trading_day": days[-1].isoformat() if days else "",
        "trading_days": len(days),
    }


def run_metadata(days: Sequence[date], frame: pl.DataFrame, descriptions: Mapping[str, str]) -> Metadata:
    """What one run reports on every partition it wrote: the run's window and the table's column schema."""
    return {
        "run_first_trading_day": days[0].isoformat() if days else "",
        "run_last_trading_day": days[-1].isoformat() if days else "",
        "run_trading_days": len(days),
        "dagster/column_schema": column_schema(frame, descriptions),
    }


class RunColumns:
    """The columns a run over a range wrote, kept without rows so that each day's frame is dropped once written.

    The first day with rows decides (an empty day's frame may carry looser types); a run without rows reports the
    first day's columns.
    """

    def __init__(self) -> None:
        self._frame: pl.DataFrame | None = None
        self._from_rows = False

    def see(self, frame: pl.DataFrame) -> None:
        if self._frame is None or (frame.height and not self._from_rows):
            self._frame, self._from_rows = frame.clear(), frame.height > 0

    @property
    def frame(self) -> pl.DataFrame:
        """An empty frame with the written columns."""
        if self._frame is None:
            raise ValueError("no day was written: a run names at least one partition")
        return self._frame


def partition_metadata(day: date, frame: pl.DataFrame, day_row_count: int) -> Metadata:
    """One partition's own figures: its day, the rows this run wrote for it, its rows in the table, a preview."""
    return {
        **window_metadata([day]),
        "dagster/row_count": day_row_count,
        "rows_written": frame.height,
        "preview": dg.MetadataValue.md(preview_markdown(frame)),
    }


def report_partitions(
    context: dg.AssetExecutionContext, metadata_by_day: Mapping[date, Metadata]
) -> None:
    """Attach each day's metadata to that day's materialization only.

    Dagster records one materialization per partition of a ranged run and gives each the run's MaterializeResult
    metadata; metadata added with a partition key overrides it on that partition alone.
    """
    for day, metadata in metadata_by_day.items():
        context.add_asset_metadata(dict(metadata), partition_key=day.isoformat())


def commit_days(
    context: dg.AssetExecutionContext, days: Sequence[date], commit: Callable[[date], tuple[T, Metadata]]
) -> list[T]:
    """`commit(day)` for each day in order, each writing its own partition in its own transaction and returning
    (its result, its metadata); each day's metadata goes on that day's materialization (`report_partitions`).

    Dagster records a ranged run's materializations when the run's step succeeds, so a day that fails would leave
    the days already written unrecorded: the UI would show nothing of what is in the lake. So when a day fails,
    each day committed before it is recorded as materialized, with its metadata, before the error goes on.
    """
    committed: dict[date, Metadata] = {}
    results = []
    try:
        for day in days:
            result, metadata = commit(day)
            report_partitions(context, {day: metadata})
            committed[day] = metadata
            results.append(result)
    except BaseException as error:  # a run terminated from the UI raises an interrupt, not an Exception
        failed = days[len(committed)].isoformat()
        for day, metadata in committed.items():
            context.log_event(dg.AssetMaterialization(
                asset_key=context.asset_key, partition=day.isoformat(),
                metadata={**metadata, "committed_before_failure_on": failed}))
        if committed:
            context.log.error(f"{failed} failed ({type(error).__name__}); the {len(committed)} day(s) before it "
                              "were written and are recorded as materialized")
        raise
    return results
