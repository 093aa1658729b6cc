"""Backfill memory: peak RSS and rows/s of a single-run range backfill of ingest + features, for several range
lengths side by side, at a chosen tick density.

The market is the embedded synthetic one: its default universe at its default density, plus one symbol (SPY by
default) at `--ticks-per-day` trades a day (SPY trades about 10^5-10^6 times a day; the synthetic market has one
density knob for all symbols, so that symbol comes from a second synthetic market tuned to the wanted count).
Each range runs in a fresh child process: one in-process `dg.materialize` of the ingest and features assets on a
fresh lake, and the child's peak RSS (ru_maxrss) is the run's whole footprint. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import date
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
from pydantic import Field

from pipeline.contract.calendar import TradingSession, trading_days
from pipeline.definitions import build_definitions
from pipeline.lake import Warehouse
from pipeline.sources.base import MarketSource
from pipeline.synthetic.config import SyntheticMarketConfig, symbol_profile
from pipeline.synthetic.source import SyntheticMarket
from resources.sources import MarketDataResource
from resources.warehouse import WarehouseResource

GROUPS = ("ingest", "features")
TABLES = ("raw.trades", "raw.quotes", "raw.option_snapshots", "features.bars_1m", "features.market",
          "features.options")
LAST_DAY = date(2024, 12, 31)
REGULAR_SESSION_MINUTES = 390
DENSE_SYMBOL = "SPY"


class DenseSymbolMarket:
    """A MarketSource: the synthetic universe at its own density, and `dense_symbol` at `ticks_per_day` trades."""

    name = "synthetic"

    def __init__(self, dense_symbol: str, ticks_per_day: int, config: SyntheticMarketConfig) -> None:
        # The symbol's own rate is trades_per_minute times a (seed, symbol) factor: divide it out.
        factor = symbol_profile(config.seed, dense_symbol, 1.0).trade_rate
        per_minute = ticks_per_day / REGULAR_SESSION_MINUTES / factor
        self.dense_symbol = dense_symbol
        self.dense = SyntheticMarket(replace(config, symbols=(dense_symbol,), trades_per_minute=per_minute))
        self.rest = SyntheticMarket(config)

    def fetch(self, table: str, session: TradingSession, symbols: Sequence[str]) -> pl.DataFrame:
        others = [s for s in symbols if s != self.dense_symbol]
        frames = [self.rest.fetch(table, session, others)] if others else []
        if self.dense_symbol in symbols:
            frames.append(self.dense.fetch(table, session, [self.dense_symbol]))
        return pl.concat(frames, how="vertical_relaxed")


class DenseSymbolMarketData(MarketDataResource):
    """The market data resource of the benchmark: `DenseSymbolMarket` over `symbols` (the dense one among them)."""

    dense_symbol: str = Field(default=DENSE_SYMBOL, description="The symbol traded at ticks_per_day.")
    ticks_per_day: int = Field(default=400_000, gt=0, description="Trades a regular session of the dense symbol.")

    def build_source(self, lake_dir: Path) -> MarketSource:
        return DenseSymbolMarket(self.dense_symbol, self.ticks_per_day, self.synthetic_config())


def _peak_rss_mb() -> float:
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_backfill(days: int, ticks_per_day: int, symbols: Sequence[str], snapshot_minutes: int, lake: Path) -> dict:
    """One single-run range backfill of ingest + features over the last `days` trading days up to LAST_DAY."""
    window = trading_days(date(LAST_DAY.year - 1, 1, 1), LAST_DAY)[-days:]
    market_data = DenseSymbolMarketData(
        symbols=[*symbols, DENSE_SYMBOL], snapshot_minutes=snapshot_minutes, ticks_per_day=ticks_per_day
    )
    assets = [a for a in build_definitions().assets if set(a.group_names_by_key.values()) & set(GROUPS)]
    tags = {"dagster/asset_partition_range_start": window[0].isoformat(),
            "dagster/asset_partition_range_end": window[-1].isoformat()}
    before_mb = _peak_rss_mb()
    start = time.perf_counter()
    result = dg.materialize(assets, tags=tags, resources={
        "warehouse": WarehouseResource(lake_path=str(lake)), "market_data": market_data})
    seconds = time.perf_counter() - start
    if not result.success:
        raise RuntimeError(f"the backfill of {days} day(s) failed")
    store = Warehouse(lake / "warehouse.duckdb")
    rows = {table: store.row_count(table) for table in TABLES}
    written = sum(rows.values())
    return {
        "days": days,
        "first_day": window[0].isoformat(),
        "last_day": window[-1].isoformat(),
        "seconds": round(seconds, 1),
        "rows": rows,
        "rows_written": written,
        "rows_per_s": round(written / seconds),
        "raw_rows_per_s": round((rows["raw.trades"] + rows["raw.quotes"]) / seconds),
        "peak_rss_mb": round(_peak_rss_mb()),
        "rss_before_run_mb": round(before_mb),
    }


def _child(args: argparse.Namespace) -> dict:
    """Run one range in a fresh process, so its peak RSS is its own."""
    command = [sys.executable, __file__, "--child", "--days", str(args.days[0]), "--ticks-per-day",
               str(args.ticks_per_day), "--symbols", ",".join(args.symbols), "--snapshot-minutes",
               str(args.snapshot_minutes)]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--days", type=int, nargs="+", default=[5, 60], help="range lengths, in trading days")
    parser.add_argument("--ticks-per-day", type=int, default=400_000, help=f"trades a day of {DENSE_SYMBOL}")
    parser.add_argument("--symbols", default=",".join(SyntheticMarketConfig().symbols),
                        help="comma-separated symbols at the default density beside SPY; '' for SPY alone")
    parser.add_argument("--snapshot-minutes", type=int, default=15, help="minutes between option snapshots")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.symbols = [s for s in args.symbols.split(",") if s]
    if args.child:
        with tempfile.TemporaryDirectory() as tmp:
            measured = run_backfill(args.days[0], args.ticks_per_day, args.symbols, args.snapshot_minutes, Path(tmp))
        print(json.dumps(measured))
        return measured
    runs = [_child(_with_days(args, days)) for days in args.days]
    report = {
        "benchmark": "backfill_memory",
        "ticks_per_day": args.ticks_per_day,
        "symbols": [*args.symbols, DENSE_SYMBOL],
        "snapshot_minutes": args.snapshot_minutes,
        "runs": runs,
        "peak_rss_mb_per_extra_day": peak_growth_per_day(runs),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "duckdb": duckdb.__version__,
        "polars": pl.__version__,
        "dagster": dg.__version__,
    }
    print(json.dumps(report))
    return report


def _with_days(args: argparse.Namespace, days: int) -> argparse.Namespace:
    return argparse.Namespace(**{**vars(args), "days": [days]})


def peak_growth_per_day(runs: list[dict]) -> float | None:
    """Peak RSS growth per trading day between the shortest and the longest range (0 when bounded by a day)."""
    if len(runs) < 2 or runs[-1]["days"] == runs[0]["days"]:
        return None
    first, last = min(runs, key=lambda r: r["days"]), max(runs, key=lambda r: r["days"])
    return round((last["peak_rss_mb"] - first["peak_rss_mb"]) / (last["days"] - first["days"]), 2)


if __name__ == "__main__":
    main()
