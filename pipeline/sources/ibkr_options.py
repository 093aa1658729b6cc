"""Live option chains from TWS / IB Gateway: the chain of each underlying as it is now, with IBKR's model greeks.

Per underlying: qualify the stock, snapshot it for spot, ask `reqSecDefOptParams` for the SMART chain's expiries
and strikes, build the calls and puts of the nearest expiries and the strikes nearest spot, qualify them (TWS
drops the strike/expiry pairs that are not listed), and snapshot them with `reqTickers`, whose tickers carry
`modelGreeks` (IBKR's option model: iv, delta, gamma, theta, vega).

Pacing (IBKR's limits, and where they come from):
- TWS accepts at most 50 API messages per second from a client and drops the connection past it (TWS API docs,
  "Troubleshooting Common Errors": 50 messages/s, one message per subscription or cancellation); ib_async itself
  queues outgoing messages at 45 per second (`Client.MaxRequests`).
- An account has 100 market data lines by default (IBKR knowledge base, "market data is over the limit": a minimum
  of 100 concurrent lines), shared with TWS's own windows; a snapshot holds a line until it completes (up to ~11 s).
Every request here sends one message per contract, so contracts go in batches of `batch_size` (40 by default, at
most 45), one batch per second (the default `Pacer`): at most 45 messages in any second, and since `reqTickers`
returns only once every snapshot of its batch is complete, at most `batch_size` lines in use at once.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import polars as pl
from ib_async import IB, Option, OptionChain, RequestError, Stock, Ticker
from ib_async.objects import OptionComputation

from pipeline.contract.calendar import NY_TZ
from pipeline.contract.occ import occ_symbol
from pipeline.contract.schemas import RAW_COLUMNS, conform, empty_frame
from pipeline.sources.base import SourceError, SourceSubscriptionError, SourceUnavailableError
from pipeline.sources.ibkr_connection import (
    NO_SUBSCRIPTION,
    UNREACHABLE,
    as_utc,
    connect_readonly,
    paced_request,
    request_failure,
    retry_policy,
    where,
)
from pipeline.sources.pacing import Pacer
from pipeline.sources.retry import RetryPolicy

logger = logging.getLogger(__name__)

MAX_BATCH = 45  # messages sent by one batch; one batch per second keeps under TWS's 50 messages/s
DEFAULT_BATCH = 40  # leaves 60 of the default 100 market data lines to TWS's own windows
_MAX_TICKERS = 101  # TWS: "Max number of tickers has been reached"
_NO_QUOTE = -1.0  # IB's price for "no bid/ask/last" (ib_async keeps it: IBDefaults.emptyPrice)
_NOT_COMPUTED = -2.0  # IB's "not computed" greek; ib_async maps it to None for delta/gamma, not for vega/theta
_UNSET = 1e300  # newer TWS sends Double.MAX_VALUE for a value it does not have
_TABLE = "option_snapshots"
_NEW_YORK = ZoneInfo(NY_TZ)


def chain_pacer() -> Pacer:
    """One batch (a request of at most MAX_BATCH messages) per second, with no other spacing."""
    return Pacer(max_requests=1, window_s=1.0, identical_gap_s=0.0, burst_requests=1, burst_window_s=1.0)


def _now() -> datetime:
    return datetime.now(UTC)


def _tick_value(value: float | None) -> float | None:
    """A bid/ask/last/volume, or None where IB has none (nan before any tick, -1 for an empty side)."""
    if value is None or not math.isfinite(value) or value == _NO_QUOTE:
        return None
    return float(value)


def _greek(greeks: OptionComputation | None, name: str) -> float | None:
    value = getattr(greeks, name) if greeks is not None else None
    if value is None or not math.isfinite(value) or abs(value) >= _UNSET:
        return None
    if name in ("vega", "theta") and value == _NOT_COMPUTED:
        return None
    return float(value)


def _spot(ticker: Ticker) -> float | None:
    """Last trade, else the bid/ask midpoint, else the previous close: the price the chain is quoted around."""
    for value in (ticker.last, ticker.midpoint(), ticker.close):
        price = _tick_value(value)
        if price is not None and price > 0:
            return price
    return None


def _expiry(contract: Option) -> date:
    return datetime.strptime(contract.lastTradeDateOrContractMonth[:8], "%Y%m%d").date()


def _batches(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _row(symbol: str, spot: float, ticker: Ticker, ts: datetime) -> dict[str, Any]:
    contract = ticker.contract
    right = contract.right[0]  # TWS answers "C"/"P"; a hand-built contract may say "CALL"/"PUT"
    expiry = _expiry(contract)
    greeks = ticker.modelGreeks
    # IB's model greeks are already in the project's units (black_scholes.py): theta per calendar day, vega per vol
    # point, iv as a fraction; tests/test_ibkr_options.py holds a ticker from ib_async's docs against bs_greeks.
    # Open interest comes only with generic tick 101, which a snapshot cannot request, so it is mostly null.
    open_interest = ticker.callOpenInterest if right == "C" else ticker.putOpenInterest
    return {
        "underlying": symbol, "underlying_price": spot,
        "contract": contract.localSymbol or occ_symbol(contract.tradingClass or symbol, expiry, right, contract.strike),
        "expiry": expiry, "strike": contract.strike, "right": right, "ts": ts,
        "bid": _tick_value(ticker.bid), "ask": _tick_value(ticker.ask), "last": _tick_value(ticker.last),
        "volume": _tick_value(ticker.volume), "open_interest": _tick_value(open_interest),
        "iv": _greek(greeks, "impliedVol"), "delta": _greek(greeks, "delta"), "gamma": _greek(greeks, "gamma"),
        "theta": _greek(greeks, "theta"), "vega": _greek(greeks, "vega"),
        # What IB says it sent for this contract (1 live; 2 frozen, 3 delayed, 4 delayed frozen: older than ts).
        "delayed": ticker.marketDataType != 1,
    }


class IBKROptionChains:
    """The live option chain of each underlying from TWS / IB Gateway, one connection per `current_chain` call."""

    name = "ibkr"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 7497,
        client_id: int = 18,
        *,
        ib_factory: Callable[[], IB] = IB,
        clock: Callable[[], datetime] = _now,
        pacer: Pacer | None = None,
        retry: RetryPolicy | None = None,
        batch_size: int = DEFAULT_BATCH,
        expiries: int = 3,
        max_expiry_days: int = 45,
        strikes: int = 11,
        market_data_type: int = 1,
        connect_timeout_s: float = 10.0,
        request_timeout_s: float = 60.0,
    ) -> None:
        """`expiries` nearest expiries within `max_expiry_days` calendar days, `strikes` strikes nearest spot in
        each, calls and puts. `market_data_type`: 1 live, 2 frozen, 3 delayed, 4 delayed frozen (reqMarketDataType).
        `client_id` differs from IBKRSource's so both can be connected at once. `retry`: how transient TWS errors
        are retried (default `ibkr_connection.retry_policy()`)."""
        if not 1 <= batch_size <= MAX_BATCH:
            raise ValueError(f"batch_size must be in 1..{MAX_BATCH} (TWS takes 50 messages/s), got {batch_size}")
        if expiries < 1 or strikes < 1 or max_expiry_days < 0:
            raise ValueError("expiries and strikes must be >= 1 and max_expiry_days >= 0")
        if market_data_type not in (1, 2, 3, 4):
            raise ValueError(f"market_data_type must be 1 (live), 2 (frozen), 3 (delayed) or 4, got {market_data_type}")
        self.host, self.port, self.client_id = host, port, client_id
        self._ib_factory = ib_factory
        self.clock = clock
        self.pacer = pacer or chain_pacer()
        self.retry = retry or retry_policy()
        self.batch_size = batch_size
        self.expiries, self.max_expiry_days, self.strikes = expiries, max_expiry_days, strikes
        self.market_data_type = market_data_type
        self.connect_timeout_s = connect_timeout_s
        self.request_timeout_s = request_timeout_s

    def __repr__(self) -> str:
        return f"IBKROptionChains(host={self.host!r}, port={self.port}, client_id={self.client_id})"

    def _where(self) -> str:
        return where(self.host, self.port, self.client_id)

    def current_chain(self, underlyings: Sequence[str]) -> pl.DataFrame:
        """Conformed raw.option_snapshots rows of each underlying's chain now (ts: when its snapshots completed).

        Rows IB sent without a bid or ask are kept as they came: validation quarantines them with the reason.
        """
        if not underlyings:
            return empty_frame(_TABLE)
        if self.market_data_type != 1:
            # Delayed or frozen quotes are older than the fetch time they are stamped with: fine for trying the
            # collector out, wrong to train on as if they were the market at ts.
            logger.warning("ibkr: market_data_type %d gives delayed or frozen quotes, stamped with the fetch time "
                           "(rows marked delayed); do not train on them as live chains", self.market_data_type)
        ib = self._ib_factory()
        try:
            self._connect(ib)
            rows = [row for symbol in underlyings for row in self._chain(ib, symbol)]
        except UNREACHABLE as exc:
            raise SourceUnavailableError(
                f"lost or timed out talking to {self._where()} while reading option chains ({type(exc).__name__}: "
                f"{exc}); check that it stays logged in, then retry (a larger request_timeout_s helps a slow feed)."
            ) from exc
        finally:
            ib.disconnect()
        if not rows:
            return empty_frame(_TABLE)
        schema = {c: t for c, t in RAW_COLUMNS[_TABLE].items() if c in rows[0]}
        frame = pl.DataFrame(rows, schema=schema).with_columns(
            pl.lit(self.name).alias("source"), pl.col("ts").dt.convert_time_zone(NY_TZ).dt.date().alias("trading_day")
        )
        unquoted = frame.filter(pl.col("bid").is_null() | pl.col("ask").is_null()).height
        if unquoted:
            logger.warning("ibkr: %d of %d option rows have no bid or ask (validation will quarantine them)",
                           unquoted, frame.height)
        return conform(_TABLE, frame)

    def _connect(self, ib: IB) -> None:
        connect_readonly(ib, self.host, self.port, self.client_id, self.connect_timeout_s, self.request_timeout_s)
        ib.reqMarketDataType(self.market_data_type)

    def _failure(self, exc: RequestError, symbol: str, what: str) -> SourceError:
        if exc.code == _MAX_TICKERS:
            return SourceError(
                f"IBKR refused {what} for {symbol}: more market data lines than the account has (error 101); lower "
                f"batch_size (now {self.batch_size}) or close TWS watchlists; TWS said: {exc.message}"
            )
        if exc.code in NO_SUBSCRIPTION:
            return SourceSubscriptionError(
                f"the IBKR account has no market data subscription for {what} of {symbol} (error {exc.code}): "
                f"subscribe to it (US options need OPRA) in Client Portal, or use delayed data (market_data_type=3: "
                f"the market_data resource's ibkr_market_data_type); TWS said: {exc.message}"
            )
        return request_failure(exc, symbol, what) or SourceError(
            f"IBKR answered {what} for {symbol} with error {exc.code}: {exc.message}"
        )

    def _paced(self, symbol: str, what: str, request: Callable[..., Any], *args: Any) -> Any:
        """One request (at most one batch of messages), after the pacer allows it, asked again after a transient
        error; TWS errors explained."""
        # Contracts are not hashable before qualification, so the pacer keys the request by what it asks.
        try:
            return paced_request(lambda: request(*args), self.pacer, self.retry, (symbol, what),
                                 "ibkr option chains", f"ibkr {what} of {symbol}")
        except RequestError as exc:
            raise self._failure(exc, symbol, what) from exc

    def _chain(self, ib: IB, symbol: str) -> list[dict[str, Any]]:
        stock = Stock(symbol, "SMART", "USD")
        if not [c for c in self._paced(symbol, "contract details", ib.qualifyContracts, stock) if c is not None]:
            raise SourceError(f"IBKR has no stock {symbol!r} on SMART in USD: check the symbol.")
        [stock_ticker] = self._paced(symbol, "stock market data", ib.reqTickers, stock)
        spot = _spot(stock_ticker)
        if spot is None:
            raise SourceError(
                f"IBKR sent no price for {symbol} (no last, bid/ask or close): check its market data permissions, "
                f"or use delayed data (market_data_type=3: the market_data resource's ibkr_market_data_type)."
            )
        chain = self._pick_chain(symbol, self._paced(symbol, "option chain", ib.reqSecDefOptParams, symbol, "",
                                                     stock.secType, stock.conId))
        contracts = self._contracts(symbol, chain, spot, as_utc(self.clock()).astimezone(_NEW_YORK).date())
        listed = self._qualify_options(ib, symbol, contracts)
        tickers = [t for batch in _batches(listed, self.batch_size)
                   for t in self._paced(symbol, "option market data", ib.reqTickers, *batch)]
        ts = as_utc(self.clock())  # after the snapshots: no quote in the chain is newer than its ts
        logger.info("ibkr: %s chain at %s: %d contracts asked, %d listed, %d snapshots", symbol, ts,
                    len(contracts), len(listed), len(tickers))
        return [_row(symbol, spot, t, ts) for t in tickers]

    def _pick_chain(self, symbol: str, chains: list[OptionChain]) -> OptionChain:
        """The SMART-routed chain, the underlying's own trading class first (SPX over the SPXW weeklies)."""
        smart = sorted((c for c in chains if c.exchange == "SMART"), key=lambda c: c.tradingClass != symbol)
        if not smart:
            raise SourceError(
                f"IBKR lists no SMART option chain for {symbol} (got exchanges {sorted({c.exchange for c in chains})}"
                f"): check that {symbol} has listed options."
            )
        return smart[0]

    def _contracts(self, symbol: str, chain: OptionChain, spot: float, today: date) -> list[Option]:
        last = today + timedelta(days=self.max_expiry_days)
        expiries = sorted(e for e in (datetime.strptime(x, "%Y%m%d").date() for x in chain.expirations)
                          if today <= e <= last)[: self.expiries]
        if not expiries:
            logger.warning("ibkr: %s has no expiry from %s to %s; no chain", symbol, today, last)
        strikes = sorted(sorted(chain.strikes, key=lambda k: (abs(k - spot), k))[: self.strikes])
        return [
            Option(symbol, f"{expiry:%Y%m%d}", strike, right, "SMART", multiplier=chain.multiplier, currency="USD",
                   tradingClass=chain.tradingClass)
            for expiry in expiries for strike in strikes for right in ("C", "P")
        ]

    def _qualify_options(self, ib: IB, symbol: str, contracts: list[Option]) -> list[Option]:
        """The contracts TWS knows: the chain's strikes span all its expiries, so some pairs are not listed."""
        # With RaiseRequestErrors one unknown contract (error 200) would fail its whole batch; without it, ib_async
        # answers None for that contract alone. Connection loss still raises.
        ib.RaiseRequestErrors = False
        try:
            answers = [c for batch in _batches(contracts, self.batch_size)
                       for c in self._paced(symbol, "option contract details", ib.qualifyContracts, *batch)]
        finally:
            ib.RaiseRequestErrors = True
        listed = [c for c in answers if c is not None]
        if len(listed) < len(contracts):
            # ib_async answers in request order, None where TWS has no such contract.
            unknown = [f"{c.lastTradeDateOrContractMonth} {c.strike:g}{c.right}"
                       for c, answer in zip(contracts, answers, strict=True) if answer is None]
            logger.info("ibkr: %s: TWS does not list %d of %d contracts: %s", symbol, len(unknown), len(contracts),
                        ", ".join(unknown))
        return listed
