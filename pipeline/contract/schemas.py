"""Column contracts of the raw tables (shared/DESIGN.md §3): names, polars dtypes, and natural keys.

raw.bars `ts` is the bar's START (the vendors' convention: Alpaca, IBKR, most CSV exports; a daily bar may carry
the bare date); features shift it to the bar's end so no bar is used before it closed. features.bars_1m `ts` is
the minute's END: the bar covers (ts - 1 min, ts].

Every source returns frames with exactly these columns (in this order); validation, the lake writer and the
features read them from here, so a column is named in one place only.
"""

from __future__ import annotations

import polars as pl

UTC_TS = pl.Datetime("us", "UTC")

RAW_COLUMNS: dict[str, dict[str, pl.DataType]] = {
    "trades": {
        "symbol": pl.Utf8,
        "ts": UTC_TS,
        "price": pl.Float64,
        "size": pl.Float64,
        "exchange": pl.Utf8,
        "conditions": pl.Utf8,
        "source": pl.Utf8,
        "trading_day": pl.Date,
    },
    "quotes": {
        "symbol": pl.Utf8,
        "ts": UTC_TS,
        "bid": pl.Float64,
        "ask": pl.Float64,
        "bid_size": pl.Float64,
        "ask_size": pl.Float64,
        "source": pl.Utf8,
        "trading_day": pl.Date,
    },
    "bars": {
        "symbol": pl.Utf8,
        "ts": UTC_TS,
        "interval": pl.Utf8,
        "open": pl.Float64,
        "high": pl.Float64,
        "low": pl.Float64,
        "close": pl.Float64,
        "volume": pl.Float64,
        "source": pl.Utf8,
        "trading_day": pl.Date,
    },
    "option_snapshots": {
        "underlying": pl.Utf8,
        "underlying_price": pl.Float64,
        "contract": pl.Utf8,
        "expiry": pl.Date,
        "strike": pl.Float64,
        "right": pl.Utf8,
        "ts": UTC_TS,
        "bid": pl.Float64,
        "ask": pl.Float64,
        "last": pl.Float64,
        "volume": pl.Float64,
        "open_interest": pl.Float64,
        "iv": pl.Float64,
        "delta": pl.Float64,
        "gamma": pl.Float64,
        "theta": pl.Float64,
        "vega": pl.Float64,
        "reconstructed": pl.Boolean,
        "null_reason": pl.Utf8,
        "delayed": pl.Boolean,
        "source": pl.Utf8,
        "trading_day": pl.Date,
    },
}

# Natural keys: two rows with the same key are duplicates (the second one is quarantined).
RAW_KEYS: dict[str, tuple[str, ...]] = {
    "trades": ("symbol", "ts", "price", "size", "exchange"),
    "quotes": ("symbol", "ts"),
    "bars": ("symbol", "interval", "ts"),
    "option_snapshots": ("contract", "ts"),
}

RAW_TABLES: tuple[str, ...] = tuple(RAW_COLUMNS)

# Columns a source may leave out: they take these values. A live chain is observed, not reconstructed; a
# reconstruction (pipeline.sources.alpaca_history) sets `reconstructed` and says in `null_reason` what it could not know.
# `delayed` stays null where the source does not say whether its quotes were live (a file landed by hand, rows
# written before the column existed).
RAW_DEFAULTS: dict[str, dict[str, object]] = {
    "option_snapshots": {"reconstructed": False, "null_reason": None, "delayed": None},
}

# quarantine.rejected_rows: one input row that failed validation, with the reason and the row as JSON.
QUARANTINE_COLUMNS: dict[str, pl.DataType] = {
    "source_table": pl.Utf8,
    "trading_day": pl.Date,
    "reason": pl.Utf8,
    "payload": pl.Utf8,
    "ingested_at": UTC_TS,
}


def empty_frame(table: str) -> pl.DataFrame:
    """An empty frame with the table's columns and dtypes."""
    return pl.DataFrame(schema=RAW_COLUMNS[table])


def with_defaults(table: str, frame: pl.DataFrame) -> pl.DataFrame:
    """`frame` with the table's defaulted columns (RAW_DEFAULTS) added where it lacks them, and their nulls
    filled: a source that does not say a chain was reconstructed observed it."""
    defaults = RAW_DEFAULTS.get(table, {})
    exprs = [
        pl.lit(v, RAW_COLUMNS[table][c]).alias(c) if c not in frame.columns else pl.col(c).fill_null(v)
        for c, v in defaults.items()
        if c not in frame.columns or v is not None
    ]
    return frame.with_columns(exprs) if exprs else frame


def conform(table: str, frame: pl.DataFrame) -> pl.DataFrame:
    """Select the table's columns in contract order, casting to contract dtypes (strict: bad casts raise).

    Defaulted columns (RAW_DEFAULTS) may be absent; every other column must be there.
    """
    frame = with_defaults(table, frame)
    missing = [c for c in RAW_COLUMNS[table] if c not in frame.columns]
    if missing:
        raise ValueError(f"{table}: missing columns {missing}; expected {list(RAW_COLUMNS[table])}")
    return frame.select([pl.col(c).cast(t) for c, t in RAW_COLUMNS[table].items()])
