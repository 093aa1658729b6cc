"""Mapping alpaca-py's own model objects (TradeSet, QuoteSet, BarSet, OptionsSnapshot) to raw-table rows."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from alpaca.data.models import BarSet, OptionsSnapshot, Quote, QuoteSet, Trade, TradeSet

from pipeline.contract.occ import parse_occ, standard_occ


def _utc(ts: datetime) -> datetime:
    return ts.astimezone(UTC)


def _text(value: Any) -> str | None:
    """Enum members (Exchange) to their code; lists of conditions to one comma-joined string."""
    if value is None:
        return None
    if isinstance(value, list | tuple):
        return ",".join(_text(v) or "" for v in value)
    return str(getattr(value, "value", value))


def _in_session(ts: datetime, start: datetime, end: datetime) -> bool:
    return start <= ts < end


def trade_rows(trades: TradeSet, start: datetime, end: datetime) -> list[dict[str, Any]]:
    rows = []
    for symbol, items in trades.data.items():
        for t in items:
            ts = _utc(t.timestamp)
            if _in_session(ts, start, end):
                rows.append(
                    {"symbol": symbol, "ts": ts, "price": t.price, "size": t.size,
                     "exchange": _text(t.exchange), "conditions": _text(t.conditions)}
                )
    return rows


def quote_rows(quotes: QuoteSet, start: datetime, end: datetime) -> list[dict[str, Any]]:
    rows = []
    for symbol, items in quotes.data.items():
        for q in items:
            ts = _utc(q.timestamp)
            if _in_session(ts, start, end):
                rows.append(
                    {"symbol": symbol, "ts": ts, "bid": q.bid_price, "ask": q.ask_price,
                     "bid_size": q.bid_size, "ask_size": q.ask_size}
                )
    return rows


def bar_rows(bars: BarSet, interval: str, start: datetime, end: datetime) -> list[dict[str, Any]]:
    rows = []
    for symbol, items in bars.data.items():
        for b in items:
            ts = _utc(b.timestamp)
            if _in_session(ts, start, end):
                rows.append(
                    {"symbol": symbol, "ts": ts, "interval": interval, "open": b.open, "high": b.high,
                     "low": b.low, "close": b.close, "volume": b.volume}
                )
    return rows


def underlying_price(trade: Trade | None, quote: Quote | None) -> float | None:
    """Last trade price, else the quote midpoint, else None."""
    if trade is not None and trade.price:
        return float(trade.price)
    if quote is not None and quote.bid_price and quote.ask_price:
        return (quote.bid_price + quote.ask_price) / 2.0
    return None


def option_rows(
    underlying: str, spot: float | None, chain: dict[str, OptionsSnapshot], snapshot_ts: datetime,
    delayed: bool | None = None,
) -> list[dict[str, Any]]:
    """One observed row per contract; volume and open interest are not in Alpaca's option snapshot, so they stay
    null (an observed chain's nulls need no reason: `null_reason` is for reconstructed rows). `delayed`: whether
    the chain came from a delayed feed."""
    rows = []
    for contract, snap in chain.items():
        occ = parse_occ(contract)
        contract = standard_occ(contract)
        expiry, strike, right = occ if occ is not None else (None, None, None)
        quote, trade, greeks = snap.latest_quote, snap.latest_trade, snap.greeks
        rows.append(
            {
                "underlying": underlying, "underlying_price": spot, "contract": contract,
                "expiry": expiry, "strike": strike, "right": right, "ts": snapshot_ts,
                "bid": quote.bid_price if quote else None, "ask": quote.ask_price if quote else None,
                "last": trade.price if trade else None, "volume": None, "open_interest": None,
                "iv": snap.implied_volatility,
                "delta": greeks.delta if greeks else None, "gamma": greeks.gamma if greeks else None,
                "theta": greeks.theta if greeks else None, "vega": greeks.vega if greeks else None,
                "reconstructed": False, "null_reason": None, "delayed": delayed,
            }
        )
    return rows
