"""What each column of the raw tables means, for people reading the tables (the Dagster UI's column schema).

The column names and types are `pipeline.contract.schemas.RAW_COLUMNS`; this adds one sentence per column, and a
test holds the two to the same columns. Columns shared by several tables are described once.
"""

from __future__ import annotations

from pipeline.contract.schemas import RAW_COLUMNS

_SHARED = {
    "symbol": "ticker",
    "ts": "event time (UTC): the trade or quote time, the snapshot time",
    "source": "market source the row came from (synthetic, files, alpaca, ibkr)",
    "trading_day": "XNYS session date the row belongs to (the partition key)",
    "bid": "best bid price",
    "ask": "best ask price",
    "volume": "shares traded",
}

RAW_COLUMN_DOCS: dict[str, dict[str, str]] = {
    "trades": {
        "price": "trade price ($)",
        "size": "trade size (shares)",
        "exchange": "exchange or venue code of the print",
        "conditions": "sale condition codes as the vendor sends them",
    },
    "quotes": {
        "bid_size": "shares at the best bid",
        "ask_size": "shares at the best ask",
    },
    "bars": {
        "ts": "bar START (UTC); the bar covers [ts, ts + interval), a daily bar may carry the bare date",
        "interval": "bar length: a count and a unit, e.g. '1m', '5m', '1h', '1d'",
        "open": "first trade price of the bar ($)",
        "high": "highest trade price of the bar ($)",
        "low": "lowest trade price of the bar ($)",
        "close": "last trade price of the bar ($)",
        "volume": "shares traded in the bar",
    },
    "option_snapshots": {
        "underlying": "underlying ticker",
        "underlying_price": "underlying spot at the snapshot ($)",
        "contract": "OCC option symbol",
        "expiry": "expiration date",
        "strike": "strike price ($)",
        "right": "C (call) or P (put)",
        "ts": "snapshot time (UTC)",
        "bid": "best bid of the contract ($)",
        "ask": "best ask of the contract ($)",
        "last": "last trade price of the contract ($)",
        "volume": "contracts traded in the session so far",
        "open_interest": "open contracts",
        "iv": "implied volatility (annualized)",
        "delta": "option delta",
        "gamma": "option gamma (per $ of the underlying)",
        "theta": "option theta ($ per day)",
        "vega": "option vega ($ per vol point)",
        "reconstructed": "true when the row was rebuilt from historical bars, not observed (e.g. Alpaca history)",
        "null_reason": "why columns of the row are null, e.g. 'bid, ask: Alpaca keeps no historical option quotes'",
        "delayed": "true when the broker served delayed or frozen quotes, older than the fetch time in ts; false "
        "when live; null when the source did not say",
    },
}


def raw_column_description(table: str, column: str) -> str:
    """The description of `column` of raw.`table` (KeyError for a column the contract does not have)."""
    if column not in RAW_COLUMNS[table]:
        raise KeyError(f"raw.{table} has no column {column!r}; its columns are {list(RAW_COLUMNS[table])}")
    return RAW_COLUMN_DOCS[table].get(column) or _SHARED[column]
