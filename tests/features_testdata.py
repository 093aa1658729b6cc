"""A tiny, deterministic trade/quote/option generator for the feature tests (no dependency on the synthetic market)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import numpy as np
import polars as pl

from pipeline.market.schemas import RAW_COLUMNS, conform
from pipeline.market.source import TradingSession

DAY = date(2024, 7, 5)
# A regular 6.5 h session in UTC (EDT): 09:30-16:00 New York.
SESSION = TradingSession(
    trading_day=DAY,
    open=datetime(2024, 7, 5, 13, 30, tzinfo=UTC),
    close=datetime(2024, 7, 5, 20, 0, tzinfo=UTC),
)


def ticks(symbols: list[str], trades_per_symbol: int = 3000, seed: int = 7,
          session: TradingSession = SESSION) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(trades, quotes) with correlated random-walk mids, a spread of a few cents, and trades at bid/ask/mid."""
    rng = np.random.default_rng(seed)
    span_us = int((session.close - session.open).total_seconds() * 1e6)
    n = trades_per_symbol
    common = rng.standard_normal(n)
    trades, quotes = [], []
    for i, symbol in enumerate(symbols):
        offsets = np.sort(rng.integers(0, span_us, size=n))
        ts = [session.open + timedelta(microseconds=int(o)) for o in offsets]
        shocks = 0.6 * common + 0.8 * rng.standard_normal(n)
        mid = (50.0 + 20 * i) * np.exp(np.cumsum(2e-4 * shocks))
        half = rng.uniform(0.005, 0.03, size=n)
        bid, ask = mid - half, mid + half
        side = rng.integers(-1, 2, size=n)
        price = np.where(side > 0, ask, np.where(side < 0, bid, mid))
        base = {"symbol": [symbol] * n, "ts": ts, "source": ["test"] * n, "trading_day": [session.trading_day] * n}
        quotes.append(pl.DataFrame({**base, "bid": bid, "ask": ask,
                                    "bid_size": rng.integers(1, 20, n) * 100.0,
                                    "ask_size": rng.integers(1, 20, n) * 100.0}))
        trades.append(pl.DataFrame({**base, "price": price, "size": rng.integers(1, 10, n) * 100.0,
                                    "exchange": ["X"] * n, "conditions": [""] * n}))
    return (conform("trades", pl.concat(trades, how="diagonal")),
            conform("quotes", pl.concat(quotes, how="diagonal")))


def raw_bars(symbol: str, interval: str, minutes: int, seed: int = 3,
             session: TradingSession = SESSION) -> pl.DataFrame:
    """Bar-only rows of one symbol, stamped at bar END, every `minutes` minutes over the session."""
    rng = np.random.default_rng(seed)
    ends = pl.datetime_range(session.open + timedelta(minutes=minutes), session.close,
                             interval=f"{minutes}m", time_zone="UTC", eager=True)
    n = len(ends)
    close = 30.0 * np.exp(np.cumsum(1e-3 * rng.standard_normal(n)))
    open_ = np.concatenate([[30.0], close[:-1]])
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 1e-3, n))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 1e-3, n))
    frame = pl.DataFrame({"symbol": [symbol] * n, "ts": ends, "interval": [interval] * n, "open": open_,
                          "high": high, "low": low, "close": close, "volume": rng.integers(1, 100, n) * 100.0,
                          "source": ["test"] * n, "trading_day": [session.trading_day] * n})
    return conform("bars", frame)


def daily_bar(symbol: str, session: TradingSession = SESSION) -> pl.DataFrame:
    """One '1d' bar whose ts is the session date at midnight UTC (how date-only files arrive)."""
    ts = datetime(session.trading_day.year, session.trading_day.month, session.trading_day.day, tzinfo=UTC)
    frame = pl.DataFrame({"symbol": [symbol], "ts": [ts], "interval": ["1d"], "open": [10.0], "high": [11.0],
                          "low": [9.5], "close": [10.5], "volume": [1e6], "source": ["test"],
                          "trading_day": [session.trading_day]})
    return conform("bars", frame)


def empty(table: str) -> pl.DataFrame:
    return pl.DataFrame(schema=RAW_COLUMNS[table])
