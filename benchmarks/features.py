"""Feature throughput: bars_1m + market_features over one synthetic trading day of 5 symbols.

Prints one JSON object: median seconds of each stage over `--repeats` runs, feature rows/s and input ticks/s
(trades + quotes) of the two stages together. Input generation is outside the timed region.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from datetime import date

import polars as pl

from pipeline.contract.calendar import trading_session
from pipeline.features import bars_1m, market_features
from pipeline.sources.settings import SourceSettings, build_market_source
from pipeline.synthetic.config import SyntheticMarketConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--day", default="2024-07-08", help="trading day (YYYY-MM-DD)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--trades-per-minute", type=float, default=SyntheticMarketConfig.trades_per_minute,
                        help="synthetic trades per symbol-minute (quotes are about twice that)")
    args = parser.parse_args()

    config = SyntheticMarketConfig(trades_per_minute=args.trades_per_minute)
    market = build_market_source(SourceSettings(synthetic=config))
    session = trading_session(date.fromisoformat(args.day))
    symbols = list(config.symbols)
    trades = market.fetch("trades", session, symbols)
    quotes = market.fetch("quotes", session, symbols)

    bar_times, market_times, rows = [], [], 0
    for _ in range(args.repeats):
        start = time.perf_counter()
        minute_bars = bars_1m(trades, quotes, session)
        middle = time.perf_counter()
        features = market_features(minute_bars, session)
        end = time.perf_counter()
        bar_times.append(middle - start)
        market_times.append(end - middle)
        rows = features.height
    total = statistics.median(b + m for b, m in zip(bar_times, market_times, strict=True))
    ticks = trades.height + quotes.height
    print(json.dumps({
        "benchmark": "features",
        "trading_day": args.day,
        "session_minutes": session.minutes,
        "symbols": len(symbols),
        "trades_per_minute": args.trades_per_minute,
        "trades": trades.height,
        "quotes": quotes.height,
        "feature_rows": rows,
        "feature_columns": len(features.columns),
        "repeats": args.repeats,
        "bars_1m_s_median": round(statistics.median(bar_times), 4),
        "market_features_s_median": round(statistics.median(market_times), 4),
        "total_s_median": round(total, 4),
        "feature_rows_per_s": round(rows / total, 1),
        "input_ticks_per_s": round(ticks / total, 1),
        "polars": pl.__version__,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
    }))


if __name__ == "__main__":
    main()
