"""Metadata every warehouse asset reports: row counts, column schema, a markdown preview, the partition window."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

import dagster as dg
import polars as pl

PREVIEW_ROWS = 5


def partition_days(context: dg.AssetExecutionContext) -> list[date]:
    """The trading days of this run: one key, or every key of a single-run range backfill."""
    return [date.fromisoformat(key) for key in context.partition_keys]


def column_schema(frame: pl.DataFrame) -> dg.TableSchema:
    return dg.TableSchema(columns=[dg.TableColumn(name, str(dtype)) for name, dtype in frame.schema.items()])


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


def window_metadata(days: Sequence[date]) -> dict[str, dg.RawMetadataValue]:
    return {
        "first_trading_day": days[0].isoformat() if days else "",
        "last_trading_day": days[-1].isoformat() if days else "",
        "trading_days": len(days),
    }


def frame_metadata(frame: pl.DataFrame, table_row_count: int) -> dict[str, dg.RawMetadataValue]:
    """Schema, preview and row counts of what a run wrote (`table_row_count`: the whole table after the write)."""
    return {
        "dagster/column_schema": column_schema(frame),
        "dagster/row_count": table_row_count,
        "rows_written": frame.height,
        "preview": dg.MetadataValue.md(preview_markdown(frame)),
    }
