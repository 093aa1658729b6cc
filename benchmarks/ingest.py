"""Ingest throughput: validate + transactional partition write vs a plain DuckDB insert of the same rows.

Prints one JSON object: rows/s of (a) `INSERT INTO t SELECT * FROM <arrow>` into a fresh table with the raw
contract's column types, (b) `validate` + `Warehouse.write_partition` into a fresh warehouse, and b/a.
The two run side by side in this process, alternating, best of `--repeats`, on the same frame.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path

import duckdb
import numpy as np
import polars as pl

from pipeline.lake import Warehouse, raw_table_ddl
from pipeline.market.schemas import RAW_COLUMNS
from pipeline.market.source import TradingSession
from pipeline.market.validation import validate

DAY = date(2024, 7, 5)
SESSION = TradingSession(DAY, datetime(2024, 7, 5, 13, 30, tzinfo=UTC), datetime(2024, 7, 5, 20, 0, tzinfo=UTC))
SYMBOLS = ("SPY", "QQQ", "IWM", "AAPL", "MSFT", "NVDA", "AMZN", "TLT")
EXCHANGES = ("P", "Q", "N", "Z", "K", "D")


def trade_rows(n: int, bad_share: float, seed: int = 7) -> pl.DataFrame:
    """n trades over one session: U-shaped intraday timing, random-walk prices per symbol, lognormal sizes.

    A `bad_share` of the rows get a negative price, so the quarantine path is part of what is measured.
    """
    rng = np.random.default_rng(seed)
    session_us = int((SESSION.close - SESSION.open).total_seconds() * 1e6)
    # Beta(0.6, 0.6) puts more trades near the open and the close, like real intraday activity.
    offsets = np.sort((rng.beta(0.6, 0.6, n) * (session_us - 1)).astype(np.int64))
    symbol_idx = rng.integers(0, len(SYMBOLS), n)
    start = np.array([500.0, 450.0, 200.0, 220.0, 420.0, 120.0, 185.0, 95.0])
    steps = rng.normal(0.0, 2e-4, n)
    log_price = np.log(start[symbol_idx]) + np.cumsum(steps)
    sign = np.where(rng.random(n) < bad_share, -1.0, 1.0)
    open_us = int(SESSION.open.timestamp() * 1e6)
    return pl.DataFrame(
        {
            "symbol": np.array(SYMBOLS)[symbol_idx],
            "ts": pl.Series(open_us + offsets).cast(pl.Datetime("us", "UTC")),
            "price": sign * np.round(np.exp(log_price), 2),
            "size": np.maximum(1.0, np.round(rng.lognormal(4.0, 1.0, n))),
            "exchange": np.array(EXCHANGES)[rng.integers(0, len(EXCHANGES), n)],
            "conditions": pl.Series([None] * n, dtype=pl.Utf8),
            "source": ["synthetic"] * n,
            "trading_day": pl.Series([DAY] * n, dtype=pl.Date),
        },
        schema=RAW_COLUMNS["trades"],
    )


def plain_insert(frame: pl.DataFrame, path: Path) -> float:
    """Seconds for a plain Arrow insert into a fresh table with the contract's column types."""
    con = duckdb.connect(str(path))
    try:
        con.execute("CREATE SCHEMA raw")
        con.execute(raw_table_ddl("trades"))
        start = time.perf_counter()
        con.register("incoming", frame)
        con.execute("INSERT INTO raw.trades SELECT * FROM incoming")
        return time.perf_counter() - start
    finally:
        con.close()


def pipeline_ingest(frame: pl.DataFrame, path: Path) -> tuple[float, int]:
    """Seconds for validate + write_partition into a fresh warehouse (tables created before the clock starts)."""
    warehouse = Warehouse(path)
    start = time.perf_counter()
    result = validate("trades", frame, SESSION)
    warehouse.write_partition("raw.trades", [DAY], result.accepted, result.rejected)
    return time.perf_counter() - start, result.rows_accepted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_500_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--bad-share", type=float, default=0.001, help="share of rows with a negative price")
    args = parser.parse_args()

    frame = trade_rows(args.rows, args.bad_share)
    plain_s, ours_s, accepted = [], [], 0
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            plain_s.append(plain_insert(frame, Path(tmp) / f"plain_{i}.duckdb"))
            seconds, accepted = pipeline_ingest(frame, Path(tmp) / f"ours_{i}" / "warehouse.duckdb")
            ours_s.append(seconds)
    plain_rate = args.rows / min(plain_s)
    ours_rate = args.rows / min(ours_s)
    print(
        json.dumps(
            {
                "benchmark": "ingest",
                "rows": args.rows,
                "rows_accepted": accepted,
                "bad_share": args.bad_share,
                "repeats": args.repeats,
                "plain_insert_rows_per_s": round(plain_rate),
                "validate_and_write_rows_per_s": round(ours_rate),
                "ratio": round(ours_rate / plain_rate, 3),
                "goal_ratio": 0.5,
                "plain_insert_s": [round(s, 3) for s in plain_s],
                "validate_and_write_s": [round(s, 3) for s in ours_s],
                "duckdb": duckdb.__version__,
                "polars": pl.__version__,
                "python": platform.python_version(),
                "cpus": os.cpu_count(),
            }
        )
    )


if __name__ == "__main__":
    main()
