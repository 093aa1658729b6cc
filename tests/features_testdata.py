"""A tiny, deterministic trade/quote/option generator for the feature tests (no dependency on the synthetic market)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import numpy as np
import polars as pl

from pipeline.contract.calendar import TradingSession
from pipeline.contract.schemas import RAW_COLUMNS, conform

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
    """Bar-only rows of one symbol, stamped at bar START (the raw.bars contract), every `minutes` minutes."""
    rng = np.random.default_rng(seed)
    starts = pl.datetime_range(session.open, session.close - timedelta(minutes=minutes),
                               interval=f"{minutes}m", time_zone="UTC", eager=True)
    n = len(starts)
    close = 30.0 * np.exp(np.cumsum(1e-3 * rng.standard_normal(n)))
    open_ = np.concatenate([[30.0], close[:-1]])
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 1e-3, n))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 1e-3, n))
    frame = pl.DataFrame({"symbol": [symbol] * n, "ts": starts, "interval": [interval] * n, "open": open_,
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


NEAR_IV, FAR_IV, SHORT_IV = 0.20, 0.24, 0.50
EXPIRY_DAYS = (3, 10, 38)  # the 3-day expiry is too close to count as "near"
STRIKES = (90.0, 95.0, 100.0, 105.0, 110.0)


def option_chain(underlying: str = "SPY", spot: float = 101.0, session: TradingSession = SESSION,
                 snapshot_minutes: tuple[int, ...] = (30, 90)) -> pl.DataFrame:
    """A hand-checkable chain: IV = expiry level + 0.001 * (100 - K); call delta 0.5 - 0.05 (K - 100).

    Calls trade 10 and hold 100 OI per contract, puts 20 and 300, so the put/call ratios are 2 and 3.
    """
    rows = []
    levels = dict(zip(EXPIRY_DAYS, (SHORT_IV, NEAR_IV, FAR_IV), strict=True))
    for minute in snapshot_minutes:
        ts = session.open + timedelta(minutes=minute)
        for days, level in levels.items():
            expiry = session.trading_day + timedelta(days=days)
            for strike in STRIKES:
                call_delta = 0.5 - 0.05 * (strike - 100.0)
                for right, delta, volume, oi in (("C", call_delta, 10.0, 100.0), ("P", call_delta - 1, 20.0, 300.0)):
                    rows.append({
                        "underlying": underlying, "underlying_price": spot,
                        "contract": f"{underlying}{expiry:%y%m%d}{right}{int(strike * 1000):08d}",
                        "expiry": expiry, "strike": strike, "right": right, "ts": ts, "bid": 1.0, "ask": 1.1,
                        "last": 1.05, "volume": volume, "open_interest": oi, "iv": level + 0.001 * (100 - strike),
                        "delta": delta, "gamma": 0.02, "theta": -0.05, "vega": 0.1, "source": "test",
                        "trading_day": session.trading_day,
                    })
    return conform("option_snapshots", pl.DataFrame(rows))
