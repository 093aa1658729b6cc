"""The Interactive Brokers market source: historical ticks (and optional 1-minute bars) from TWS / IB Gateway.

`reqHistoricalTicks` returns at most 1000 ticks per call, so a session is read in pages: each page starts at the
last tick time already seen and the ticks of that second which were already collected are dropped (IBKR completes
the last second of a page, so they come again). Every request goes through a `Pacer` that honours IBKR's
historical-data limits (60 requests in 10 minutes: about 6,000 ticks a minute), and a request that fails for a
passing reason (a timeout, a pacing violation, a dropped query, lost connectivity) is asked again, paced, with
backoff, a bounded number of times: the pages already read are kept. Option snapshots of past days are not provided: TWS has no historical option-chain snapshot
endpoint, so `fetch("option_snapshots", ...)` returns an empty frame; IBKR chains are recorded live instead, by the
option collector through `pipeline.sources.ibkr_options.IBKROptionChains`.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

import polars as pl
from ib_async import IB, RequestError, Stock
from ib_async.objects import HistoricalTickBidAsk, HistoricalTickLast

from pipeline.contract.calendar import TradingSession
from pipeline.contract.schemas import RAW_COLUMNS, RAW_TABLES, conform, empty_frame
from pipeline.sources import ibkr_connection
from pipeline.sources.base import SourceError, SourceUnavailableError
from pipeline.sources.ibkr_connection import UNREACHABLE, as_utc, connect_readonly, request_failure, where
from pipeline.sources.pacing import Pacer
from pipeline.sources.retry import RetryPolicy

logger = logging.getLogger(__name__)

MAX_TICKS_PER_REQUEST = 1000
_TICK_TYPES = {"trades": "TRADES", "quotes": "BID_ASK"}
def _tick_key(tick: Any) -> tuple:
    """A hashable identity of a tick: every field but the (unhashable) attribute dataclass."""
    return tuple(v for v in tick if not hasattr(v, "__dataclass_fields__"))


def _ticks_at(collected: list[Any], second: datetime) -> Counter[tuple]:
    """The ticks of `second` among `collected` (in time order), read from the end: not a scan of the whole day."""
    edge: Counter[tuple] = Counter()
    for tick in reversed(collected):
        if as_utc(tick.time) != second:
            break
        edge[_tick_key(tick)] += 1
    return edge


def _trade_row(symbol: str, tick: HistoricalTickLast) -> dict[str, Any]:
    return {"symbol": symbol, "ts": as_utc(tick.time), "price": tick.price, "size": float(tick.size),
            "exchange": tick.exchange or None, "conditions": tick.specialConditions or None}


def _quote_row(symbol: str, tick: HistoricalTickBidAsk) -> dict[str, Any]:
    return {"symbol": symbol, "ts": as_utc(tick.time), "bid": tick.priceBid, "ask": tick.priceAsk,
            "bid_size": float(tick.sizeBid), "ask_size": float(tick.sizeAsk)}


class IBKRSource:
    """Fetches one trading day of ticks from TWS / IB Gateway, one connection per `fetch`."""

    name = "ibkr"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 7497,
        client_id: int = 17,
        *,
        ib_factory: Callable[[], IB] = IB,
        pacer: Pacer | None = None,
        retry: RetryPolicy | None = None,
        connect_timeout_s: float = 10.0,
        request_timeout_s: float = 120.0,
        ticks_per_request: int = MAX_TICKS_PER_REQUEST,
    ) -> None:
        """`retry`: how transient TWS errors are retried (default `ibkr_connection.retry_policy()`)."""
        if not 1 <= ticks_per_request <= MAX_TICKS_PER_REQUEST:
            raise ValueError(f"ticks_per_request must be in 1..{MAX_TICKS_PER_REQUEST}, got {ticks_per_request}")
        self.host, self.port, self.client_id = host, port, client_id
        self._ib_factory = ib_factory
        self.pacer = pacer or Pacer()
        self.retry = retry or ibkr_connection.retry_policy()
        self.connect_timeout_s = connect_timeout_s
        self.request_timeout_s = request_timeout_s
        self.ticks_per_request = ticks_per_request

    def __repr__(self) -> str:
        return f"IBKRSource(host={self.host!r}, port={self.port}, client_id={self.client_id})"

    def _where(self) -> str:
        return where(self.host, self.port, self.client_id)

    def fetch(self, table: str, session: TradingSession, symbols: Sequence[str]) -> pl.DataFrame:
        """One trading day of trades/quotes (historical ticks) or 1-minute bars, regular trading hours only."""
        if table not in RAW_TABLES:
            raise SourceError(f"unknown table {table!r}; the IBKR source serves {list(RAW_TABLES)}")
        if table == "option_snapshots":
            logger.info("ibkr: TWS keeps no option-chain history, so option_snapshots is empty; the live option "
                        "collector (IBKROptionChains) records IBKR chains as they happen")
            return empty_frame(table)
        if not symbols:
            return empty_frame(table)
        ib = self._ib_factory()
        try:
            self._connect(ib)
            rows: list[dict[str, Any]] = []
            for symbol in symbols:
                contract = Stock(symbol, "SMART", "USD")
                if table == "bars":
                    rows.extend(self._bars(ib, symbol, contract, session))
                else:
                    rows.extend(self._tick_rows(ib, table, symbol, contract, session))
        except UNREACHABLE as exc:
            raise SourceUnavailableError(
                f"lost or timed out talking to {self._where()} while fetching {table} ({type(exc).__name__}: "
                f"{exc}); check that it stays logged in and has market data permissions, then retry."
            ) from exc
        finally:
            ib.disconnect()
        schema = {c: t for c, t in RAW_COLUMNS[table].items() if c not in ("source", "trading_day")}
        frame = pl.DataFrame(rows, schema=schema).with_columns(
            pl.lit(self.name).alias("source"), pl.lit(session.trading_day).alias("trading_day")
        )
        logger.info("ibkr: %d %s rows for %s on %s", frame.height, table, list(symbols), session.trading_day)
        return conform(table, frame)

    def _connect(self, ib: IB) -> None:
        connect_readonly(ib, self.host, self.port, self.client_id, self.connect_timeout_s, self.request_timeout_s)

    def _tick_rows(
        self, ib: IB, table: str, symbol: str, contract: Stock, session: TradingSession
    ) -> list[dict[str, Any]]:
        to_row = _trade_row if table == "trades" else _quote_row
        return [to_row(symbol, t) for t in self._ticks(ib, contract, _TICK_TYPES[table], session)]

    def _ticks(self, ib: IB, contract: Stock, what: str, session: TradingSession) -> list[Any]:
        """Every tick of the session, page by page, without duplicates at page edges."""
        collected: list[Any] = []
        edge: Counter[tuple] = Counter()  # ticks already collected at the latest second (the next page repeats that second)
        start = session.open
        while True:
            try:
                page = ibkr_connection.paced_request(
                    lambda start=start: ib.reqHistoricalTicks(
                        contract, startDateTime=start, endDateTime="", numberOfTicks=self.ticks_per_request,
                        whatToShow=what, useRth=True,
                    ),
                    self.pacer, self.retry, (contract.symbol, what, start), (contract.symbol, what),
                    f"ibkr {what} ticks of {contract.symbol}",
                )
            except RequestError as exc:
                if (failure := request_failure(exc, contract.symbol, what)) is not None:
                    raise failure from exc
                page = []
            fresh = []
            for tick in page:
                key = _tick_key(tick)
                if edge[key] > 0:
                    edge[key] -= 1
                    continue
                fresh.append(tick)
            collected.extend(t for t in fresh if session.open <= as_utc(t.time) < session.close)
            if len(page) < self.ticks_per_request:
                break  # the last page: fewer ticks than asked for means nothing more up to now
            newest = max(as_utc(t.time) for t in page)
            if newest >= session.close:
                break
            if not fresh:
                # A full page that only repeats one second: that second is complete, move past it.
                start, edge = newest + timedelta(seconds=1), Counter()
                continue
            start = newest
            edge = _ticks_at(collected, newest)
        return collected

    def _bars(self, ib: IB, symbol: str, contract: Stock, session: TradingSession) -> list[dict[str, Any]]:
        seconds = int((session.close - session.open).total_seconds())
        try:
            bars = ibkr_connection.paced_request(
                lambda: ib.reqHistoricalData(
                    contract, endDateTime=session.close, durationStr=f"{seconds} S", barSizeSetting="1 min",
                    whatToShow="TRADES", useRTH=True, formatDate=2,
                ),
                self.pacer, self.retry, (symbol, "bars", session.close), (symbol, "TRADES bars"),
                f"ibkr 1-minute bars of {symbol}",
            )
        except RequestError as exc:
            if (failure := request_failure(exc, symbol, "1-minute bars")) is not None:
                raise failure from exc
            return []
        rows = []
        for bar in bars:
            ts = as_utc(bar.date) if isinstance(bar.date, datetime) else None
            if ts is not None and session.open <= ts < session.close:
                rows.append({"symbol": symbol, "ts": ts, "interval": "1m", "open": bar.open, "high": bar.high,
                             "low": bar.low, "close": bar.close, "volume": float(bar.volume)})
        return rows
