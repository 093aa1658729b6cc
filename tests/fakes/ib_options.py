"""A fake ib_async `IB` serving option chains as TWS does, as ib_async's own objects.

It answers `qualifyContracts` (filling conId and the OCC localSymbol, None for contracts TWS does not list, or a
RequestError 200 for them when RaiseRequestErrors is on, as ib_async does), `reqSecDefOptParams` (OptionChain
objects), and `reqTickers` (snapshot Tickers; options carry `modelGreeks` from Black-Scholes in IB's units, which
are the project's). Each request is logged with the pacer clock's time and its number of contracts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from ib_async import Contract, OptionChain, RequestError, Ticker
from ib_async.objects import OptionComputation

from pipeline.contract.black_scholes import bs_greeks, bs_price
from pipeline.contract.occ import occ_symbol
from tests.fakes.ib import FakeIB

OptionKey = tuple[str, str, float, str]
"""(symbol, expiry YYYYMMDD, strike, right)."""
RATE = 0.05


def weekly_chain(symbol: str, con_id: int, today: date, spot: float, weeks: int = 8) -> list[OptionChain]:
    """The SMART chain (and its CBOE twin, which must not be picked) of `symbol`: Friday expiries from `today` on,
    $1 strikes from 20% below to 20% above spot."""
    fridays = [today + timedelta(days=(4 - today.weekday()) % 7 + 7 * w) for w in range(weeks)]
    expirations = [f"{d:%Y%m%d}" for d in fridays]
    strikes = [float(k) for k in range(int(spot * 0.8), int(spot * 1.2) + 1)]
    return [OptionChain(exchange, con_id, symbol, "100", expirations, strikes) for exchange in ("CBOE", "SMART")]


@dataclass(kw_only=True)
class FakeChainIB(FakeIB):
    """Stands in for `ib_async.IB`: FakeIB's connection (connect_error, clock, requests) plus reqMarketDataType,
    qualifyContracts, reqSecDefOptParams and reqTickers."""

    spots: dict[str, float]
    """Underlying symbol -> last price of its snapshot."""
    chains: dict[str, list[OptionChain]]
    today: date
    unlisted: set[OptionKey] = field(default_factory=set)
    """Contracts of the chain's expiry x strike grid that TWS does not list."""
    edit_ticker: Callable[[Ticker], None] = lambda ticker: None
    """Changes an option's snapshot before it is returned (missing quotes, IB sentinels)."""
    snapshot_error: BaseException | None = None
    """Raised by reqTickers for option contracts (a stock snapshot still answers)."""
    snapshot_failures: list[BaseException] = field(default_factory=list)
    """Raised one each by the first option reqTickers calls, before `snapshot_error` applies."""
    market_data_type: int | None = None
    _con_ids: dict[Any, int] = field(default_factory=dict)

    def connect(self, host: str, port: int, clientId: int, timeout: float, readonly: bool) -> None:  # noqa: N803
        assert readonly, "the chain reader never trades, so it connects read-only"
        super().connect(host, port, clientId=clientId, timeout=timeout, readonly=readonly)

    def reqMarketDataType(self, marketDataType: int) -> None:  # noqa: N802, N803 - ib_async's names
        self.market_data_type = marketDataType

    def _log(self, call: str, contracts: tuple[Contract, ...]) -> None:
        assert self.connected
        self.requests.append({"call": call, "n": len(contracts), "at": self.clock()})

    def _listed(self, c: Contract) -> bool:
        if c.secType == "STK":
            return c.symbol in self.spots and c.exchange == "SMART" and c.currency == "USD"
        grid = next((ch for ch in self.chains.get(c.symbol, []) if ch.tradingClass == c.tradingClass), None)
        return (
            grid is not None and c.lastTradeDateOrContractMonth in grid.expirations and c.strike in grid.strikes
            and (c.symbol, c.lastTradeDateOrContractMonth, c.strike, c.right) not in self.unlisted
        )

    def qualifyContracts(self, *contracts: Contract) -> list[Contract | None]:  # noqa: N802 - ib_async's name
        self._log("qualifyContracts", contracts)
        answers: list[Contract | None] = []
        for c in contracts:
            if not self._listed(c):
                if self.RaiseRequestErrors:
                    raise RequestError(len(self.requests), 200, "No security definition has been found for the request")
                answers.append(None)
                continue
            key = (c.secType, c.symbol, c.lastTradeDateOrContractMonth, c.strike, c.right)
            c.conId = self._con_ids.setdefault(key, 1000 + len(self._con_ids))
            if c.secType == "OPT":
                expiry = datetime.strptime(c.lastTradeDateOrContractMonth, "%Y%m%d").date()
                c.localSymbol = occ_symbol(c.tradingClass, expiry, c.right, c.strike)
            answers.append(c)
        return answers

    def reqSecDefOptParams(  # noqa: N802 - ib_async's name
        self, underlyingSymbol: str, futFopExchange: str, underlyingSecType: str, underlyingConId: int,  # noqa: N803
    ) -> list[OptionChain]:
        assert futFopExchange == "" and underlyingSecType == "STK" and underlyingConId > 0
        self._log("reqSecDefOptParams", ())
        return self.chains.get(underlyingSymbol, [])

    def reqTickers(self, *contracts: Contract, regulatorySnapshot: bool = False) -> list[Ticker]:  # noqa: N802
        assert all(c.conId for c in contracts), "snapshots need qualified contracts"
        self._log("reqTickers", contracts)
        if any(c.secType == "OPT" for c in contracts):
            error = self.snapshot_failures.pop(0) if self.snapshot_failures else self.snapshot_error
            if error is not None:
                raise error
        return [self._ticker(c) for c in contracts]

    def _ticker(self, c: Contract) -> Ticker:
        # Ticker.__post_init__ resets its prices to nan, so values are set after construction, as ib_async does.
        ticker = Ticker(contract=c)
        if c.secType == "STK":
            spot = self.spots[c.symbol]
            ticker.last, ticker.bid, ticker.ask, ticker.bidSize, ticker.askSize = spot, spot - 0.01, spot + 0.01, 3, 5
            return ticker
        spot = self.spots[c.symbol]
        t = ((datetime.strptime(c.lastTradeDateOrContractMonth, "%Y%m%d").date() - self.today).days + 0.3) / 365
        vol = 0.15 + 0.5 * abs(c.strike / spot - 1.0)
        is_call = c.right == "C"
        price = float(bs_price(spot, c.strike, t, RATE, vol, is_call))
        greeks = {k: float(v) for k, v in bs_greeks(spot, c.strike, t, RATE, vol, is_call).items()}
        ticker.bid, ticker.ask = round(max(price - 0.02, 0.0), 2), round(price + 0.02, 2)
        ticker.bidSize, ticker.askSize, ticker.last, ticker.volume = 10, 12, round(price, 2), 250.0
        ticker.modelGreeks = OptionComputation(0, vol, greeks["delta"], price, 0.0, greeks["gamma"], greeks["vega"],
                                               greeks["theta"], spot)
        # IB answers with the data type it sent (an account without the OPRA subscription gets what it asked for).
        ticker.marketDataType = self.market_data_type or 1
        self.edit_ticker(ticker)
        return ticker
