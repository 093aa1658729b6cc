"""The embedded synthetic market: a deterministic MarketSource with minute bars, ticks and option chains.

`SyntheticMarket(config).minute_bars(session, symbols)` is the fast truth path the environments use;
`fetch("trades" | "quotes" | "option_snapshots", ...)` returns raw-table frames whose aggregation reproduces the
bars (same OHLC, volume, trade count, vwap and bar-end quote). The model, the planted alpha signal and
the oracle policy are described in docs/SYNTHETIC_MARKET.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np
import polars as pl

from pipeline.contract.calendar import TradingSession
from pipeline.contract.schemas import RAW_COLUMNS, UTC_TS, conform, empty_frame
from pipeline.synthetic.config import DEFAULT_SYMBOLS, SyntheticMarketConfig, stream
from pipeline.synthetic.oracle import OracleSharpe, oracle_positions, oracle_returns, oracle_sharpe
from pipeline.synthetic.paths import CENTS_PER_DOLLAR, US_PER_MINUTE, SymbolDay, symbol_day

__all__ = [
    "DEFAULT_SYMBOLS", "OracleSharpe", "SyntheticMarket", "SyntheticMarketConfig",
    "oracle_positions", "oracle_returns", "oracle_sharpe",
]

BAR_COLUMNS: dict[str, pl.DataType] = {
    "symbol": pl.Utf8,
    "ts": UTC_TS,
    "open": pl.Float64,
    "high": pl.Float64,
    "low": pl.Float64,
    "close": pl.Float64,
    "volume": pl.Float64,
    "vwap": pl.Float64,
    "trade_count": pl.Int64,
    "bid": pl.Float64,
    "ask": pl.Float64,
}
EXCHANGES = np.array(["XNYS", "XNAS", "ARCX", "BATS", "EDGX", "IEXG"])
EXCHANGE_SHARES = np.array([0.25, 0.25, 0.15, 0.15, 0.12, 0.08])


def _epoch_us(moment: datetime) -> int:
    return round((moment - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds() * 1_000_000)


def _interleave(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    return np.column_stack([before, after]).ravel()


def _ts(us: np.ndarray) -> pl.Series:
    return pl.Series("ts", us.astype(np.int64)).cast(pl.Datetime("us", "UTC"))


class SyntheticMarket:
    """A MarketSource (name "synthetic") generating data from (config.seed, symbol, trading_day) alone."""

    name = "synthetic"

    def __init__(self, config: SyntheticMarketConfig | None = None) -> None:
        self.config = config or SyntheticMarketConfig()

    def _symbols(self, symbols: Sequence[str] | None) -> list[str]:
        """None means the configured universe; an empty list means no symbols."""
        if isinstance(symbols, str):
            raise TypeError(f"symbols must be a sequence of tickers, not the string {symbols!r}; wrap it in a list")
        return list(self.config.symbols) if symbols is None else list(symbols)

    def symbol_day(self, session: TradingSession, symbol: str) -> SymbolDay:
        """The raw arrays of one symbol-day (cached)."""
        return symbol_day(self.config, symbol, session)

    def minute_bars(self, session: TradingSession, symbols: Sequence[str] | None = None) -> pl.DataFrame:
        """One row per symbol-minute; ts is the bar's END (the bar covers (ts - 1 min, ts]); bid/ask at ts."""
        chosen = self._symbols(symbols)
        if not chosen:
            return pl.DataFrame(schema=BAR_COLUMNS)
        parts = [self._bar_arrays(self.symbol_day(session, s)) for s in chosen]
        columns = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
        minutes = session.minutes
        symbol = pl.Series("symbol", chosen, dtype=pl.Utf8).gather(np.repeat(np.arange(len(chosen)), minutes))
        ts = _epoch_us(session.open) + US_PER_MINUTE * (np.arange(minutes) + 1)
        columns["ts"] = np.tile(ts, len(chosen))
        frame = pl.DataFrame({"symbol": symbol, **{k: v for k, v in columns.items() if k != "ts"}})
        return frame.with_columns(_ts(columns["ts"])).select(
            [pl.col(c).cast(t) for c, t in BAR_COLUMNS.items()]
        )

    @staticmethod
    def _bar_arrays(sd: SymbolDay) -> dict[str, np.ndarray]:
        starts = sd.bar_starts
        ends = starts + sd.trade_counts - 1
        price = sd.trade_price_cents
        volume = np.add.reduceat(sd.trade_size, starts)
        notional = np.add.reduceat(price * sd.trade_size, starts)
        cents = float(CENTS_PER_DOLLAR)
        return {
            "open": price[starts] / cents,
            "high": np.maximum.reduceat(price, starts) / cents,
            "low": np.minimum.reduceat(price, starts) / cents,
            "close": price[ends] / cents,
            "volume": volume.astype(np.float64),
            "vwap": notional / volume / cents,
            "trade_count": sd.trade_counts,
            "bid": sd.bid_cents / cents,
            "ask": sd.ask_cents / cents,
        }

    def fetch(self, table: str, session: TradingSession, symbols: Sequence[str] | None) -> pl.DataFrame:
        """Raw rows for one day (symbols None: the configured universe); "bars" is empty (tick-level source)."""
        if table not in RAW_COLUMNS:
            raise ValueError(f"unknown table {table!r}; the synthetic market serves {sorted(RAW_COLUMNS)}")
        chosen = self._symbols(symbols)
        if table == "bars" or not chosen:
            return empty_frame(table)
        if table == "option_snapshots":
            from pipeline.synthetic.options import option_snapshots

            frames = [option_snapshots(self.config, self.symbol_day(session, s)) for s in chosen]
        else:
            build = self._trades_of if table == "trades" else self._quotes_of
            frames = [build(self.symbol_day(session, s)) for s in chosen]
        frame = pl.concat(frames).with_columns(
            pl.lit(self.name).alias("source"), pl.lit(session.trading_day).alias("trading_day")
        )
        return conform(table, frame)

    def _trade_ts(self, sd: SymbolDay) -> np.ndarray:
        return _epoch_us(sd.session.open) + US_PER_MINUTE * sd.trade_minute + sd.trade_offset_us

    def _trades_of(self, sd: SymbolDay) -> pl.DataFrame:
        n = len(sd.trade_minute)
        rng = stream(self.config.seed, "trade-venues", sd.symbol, sd.session.trading_day.isoformat())
        exchange = EXCHANGES[rng.choice(len(EXCHANGES), size=n, p=EXCHANGE_SHARES)]
        conditions = np.where(sd.trade_size < 100, "@ I", "@")
        return pl.DataFrame(
            {
                "symbol": [sd.symbol] * n,
                "ts": _ts(self._trade_ts(sd)),
                "price": sd.trade_price_cents / float(CENTS_PER_DOLLAR),
                "size": sd.trade_size.astype(np.float64),
                "exchange": exchange,
                "conditions": conditions,
            }
        )

    def _quotes_of(self, sd: SymbolDay) -> pl.DataFrame:
        """Two quotes per trade: the one it executes against (just before) and the size update (just after)."""
        trade_us = self._trade_ts(sd)
        gap = np.diff(trade_us, prepend=trade_us[0] - sd.trade_offset_us[0])
        before = trade_us - np.maximum(1, np.minimum(gap // 2, 250_000))
        after = trade_us + 1
        n = len(trade_us)
        rng = stream(self.config.seed, "quote-sizes", sd.symbol, sd.session.trading_day.isoformat())
        depth = rng.geometric(0.3, size=(4, n)) * 100.0
        # The side a trade hit is thinner afterwards; the other side is unchanged.
        hit = sd.trade_size.astype(np.float64)
        bid_after = np.where(sd.trade_is_buy, depth[0], np.maximum(100.0, depth[0] + depth[2] - hit))
        ask_after = np.where(sd.trade_is_buy, np.maximum(100.0, depth[1] + depth[3] - hit), depth[1])
        bid_before = np.where(sd.trade_is_buy, depth[0], depth[0] + depth[2])
        ask_before = np.where(sd.trade_is_buy, depth[1] + depth[3], depth[1])
        ts = _interleave(before, after)
        cents = float(CENTS_PER_DOLLAR)
        return pl.DataFrame(
            {
                "symbol": [sd.symbol] * (2 * n),
                "ts": _ts(ts),
                "bid": _interleave(sd.trade_bid_cents, sd.trade_bid_cents) / cents,
                "ask": _interleave(sd.trade_ask_cents, sd.trade_ask_cents) / cents,
                "bid_size": _interleave(bid_before, bid_after),
                "ask_size": _interleave(ask_before, ask_after),
            }
        )
