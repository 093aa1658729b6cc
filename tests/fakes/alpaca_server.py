"""A local HTTP server that answers like Alpaca's market data API (stocks v2, options v1beta1) and the trading
API's option contract list (v2/options/contracts).

The real alpaca-py clients talk to it through `url_override`, so the SDK's own request, pagination
(`next_page_token`), model parsing (TradeSet, QuoteSet, BarSet, OptionsSnapshot, OptionContractsResponse) and
APIError paths all run.
"""

from __future__ import annotations

import json
import math
import select
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import numpy as np

from pipeline.contract.black_scholes import DAYS_PER_YEAR, bs_price
from pipeline.contract.calendar import TradingSession, expiry_close

HANG = "hang"  # failure script entry: never answer; hold the connection until the client gives up
DROP = "drop"  # failure script entry: close the connection without an answer
PASS = "pass"  # failure script entry: answer this request normally (to fail a later page, not the first)


@dataclass(frozen=True)
class Reply:
    """Failure script entry: an error answer with Alpaca's JSON body and the given headers."""

    status: int
    message: str = "injected failure"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class FakeAlpacaState:
    api_key: str
    secret_key: str
    page_size: int = 2
    trades: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    quotes: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    bars: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    latest_trades: dict[str, dict[str, Any]] = field(default_factory=dict)
    latest_quotes: dict[str, dict[str, Any]] = field(default_factory=dict)
    chains: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    option_bars: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    contracts: list[dict[str, Any]] = field(default_factory=list)
    """The trading API's contract listings (JSON as Alpaca sends them), filtered by the request's query."""
    contract_page_size: int | None = None
    """Contracts per page (None: page_size), so contract paging can be tested without paging thousands of bars."""
    failures: list[int | str | Reply] = field(default_factory=list)
    """Consumed one per request before answering: an HTTP status, a Reply, HANG, DROP or PASS."""
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)


def _page(data: dict[str, list[dict[str, Any]]], symbols: list[str], token: str | None, size: int) -> tuple:
    flat = [(s, row) for s in symbols for row in data.get(s, [])]
    offset = int(token) if token else 0
    chunk = flat[offset : offset + size]
    grouped: dict[str, list[dict[str, Any]]] = {}
    for symbol, row in chunk:
        grouped.setdefault(symbol, []).append(row)
    nxt = str(offset + size) if offset + size < len(flat) else None
    return grouped, nxt


def _contracts_page(state: FakeAlpacaState, params: dict[str, str]) -> dict[str, Any]:
    """One page of the contract list, filtered as the trading API filters (status defaults to active)."""
    underlyings = set(params.get("underlying_symbols", "").split(","))
    status = params.get("status", "active")
    matching = [
        c for c in state.contracts
        if c["underlying_symbol"] in underlyings and c["status"] == status
        and params.get("expiration_date_gte", "") <= c["expiration_date"] <= params.get("expiration_date_lte", "9999")
        and float(params.get("strike_price_gte", "-inf")) <= float(c["strike_price"])
        <= float(params.get("strike_price_lte", "inf"))
    ]
    size = min(int(params.get("limit", 100)), state.contract_page_size or state.page_size)
    offset = int(params.get("page_token") or 0)
    nxt = str(offset + size) if offset + size < len(matching) else None
    return {"option_contracts": matching[offset : offset + size], "next_page_token": nxt}


class _Handler(BaseHTTPRequestHandler):
    state: FakeAlpacaState
    stopped: threading.Event
    """Set when the server shuts down, so a HANG whose client never hangs up still ends."""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's signature
        """Silence the stdlib's per-request stderr line."""

    def _send(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        state = self.state
        url = urlparse(self.path)
        params = {k: v[0] for k, v in parse_qs(url.query).items()}
        state.requests.append((url.path, params))
        failure = state.failures.pop(0) if state.failures else PASS
        if failure == DROP:
            self.close_connection = True
            self.connection.shutdown(2)
            return
        if failure == HANG:
            self._hang()
            return
        if failure != PASS:
            reply = failure if isinstance(failure, Reply) else Reply(int(failure))
            self._send(reply.status, {"code": reply.status * 100000, "message": reply.message}, reply.headers)
            return
        key = self.headers.get("APCA-API-KEY-ID")
        secret = self.headers.get("APCA-API-SECRET-KEY")
        if key != state.api_key or secret != state.secret_key:
            self._send(401 if not secret else 403, {"message": "forbidden."})
            return
        self._route(url.path, params)

    def _hang(self) -> None:
        """Answer nothing until the client closes the connection (its timeout fired) or the server stops.

        A reply that only comes late would race the client's timeout on a loaded machine; one that never comes
        makes the timeout certain, whatever the client's timeout and however slow the machine.
        """
        self.close_connection = True
        while not self.stopped.is_set():
            readable, _, _ = select.select([self.connection], [], [], 0.05)
            try:
                if readable and not self.connection.recv(4096):
                    return  # end of stream: the client gave up
            except OSError:
                return  # reset by the client: it gave up too

    def _route(self, path: str, params: dict[str, str]) -> None:
        state = self.state
        symbols = params.get("symbols", "").split(",")
        token = params.get("page_token")
        for name in ("trades", "quotes", "bars"):
            if path == f"/v2/stocks/{name}":
                grouped, nxt = _page(getattr(state, name), symbols, token, state.page_size)
                self._send(200, {name: grouped, "next_page_token": nxt})
                return
        if path == "/v1beta1/options/bars":
            grouped, nxt = _page(state.option_bars, symbols, token, state.page_size)
            self._send(200, {"bars": grouped, "next_page_token": nxt})
        elif path == "/v2/options/contracts":
            self._send(200, _contracts_page(state, params))
        elif path == "/v2/stocks/trades/latest":
            self._send(200, {"trades": {s: state.latest_trades[s] for s in symbols if s in state.latest_trades}})
        elif path == "/v2/stocks/quotes/latest":
            self._send(200, {"quotes": {s: state.latest_quotes[s] for s in symbols if s in state.latest_quotes}})
        elif path.startswith("/v1beta1/options/snapshots/"):
            chain = state.chains.get(path.rsplit("/", 1)[1], {})
            contracts = sorted(chain)
            offset = int(token) if token else 0
            page = {c: chain[c] for c in contracts[offset : offset + state.page_size]}
            nxt = str(offset + state.page_size) if offset + state.page_size < len(contracts) else None
            self._send(200, {"snapshots": page, "next_page_token": nxt})
        else:
            self._send(404, {"message": f"not found: {path}"})


@contextmanager
def fake_alpaca(state: FakeAlpacaState) -> Iterator[str]:
    """Serve `state` on 127.0.0.1; yields the base URL to pass as `url_override`."""
    stopped = threading.Event()
    handler = type("Handler", (_Handler,), {"state": state, "stopped": stopped})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        stopped.set()
        server.shutdown()
        server.server_close()


def occ_symbol(underlying: str, expiry: date, right: str, strike: float) -> str:
    """A contract as Alpaca spells it: the OCC symbol without the root's padding."""
    return f"{underlying}{expiry:%y%m%d}{right}{round(strike * 1000):08d}"


def option_day(
    state: FakeAlpacaState,
    session: TradingSession,
    underlying: str = "SPY",
    vol: float = 0.25,
    rate: float = 0.045,
    spot: Callable[[int], float] = lambda minute: 500.0 * (1 + 0.01 * math.sin(minute / 60)),
) -> None:
    """Fill `state` with one day of `underlying`: its 1-minute bars, a listed chain and its options' 1-minute bars.

    The chain: expiries on the day, 7, 14 and 60 days later; strikes 400 to 600 every 10; calls and puts; those
    expiring within a week already expired (inactive), the rest active. Contract i (in listing order) trades every
    minute, every 5 minutes, every 20 minutes or never, as i % 4 is 0, 1, 2 or 3. Every option bar closes at its
    Black-Scholes price at `vol` against the underlying bar of the same minute, with the time to expiry measured from
    the bar's end: a snapshot at that end prices it back to exactly `vol`.
    """
    minutes = session.minutes
    starts = [session.open + timedelta(minutes=m) for m in range(minutes)]
    state.bars[underlying] = [_bar(t, spot(m), 1000 + m) for m, t in enumerate(starts)]
    day = session.trading_day
    for expiry in (day + timedelta(days=d) for d in (0, 7, 14, 60)):
        close = expiry_close(expiry)
        for strike in range(400, 601, 10):
            for right in ("C", "P"):
                i = len(state.contracts)
                symbol = occ_symbol(underlying, expiry, right, strike)
                state.contracts.append(_contract(symbol, underlying, expiry, right, strike, expiry <= day + timedelta(7)))
                every = (1, 5, 20, None)[i % 4]
                if every is None:
                    continue
                traded = [m for m in range(minutes) if (m + i) % every == 0]
                ends = [starts[m] + timedelta(minutes=1) for m in traded]
                years = np.array([(close - end).total_seconds() for end in ends]) / (DAYS_PER_YEAR * 86_400)
                traded = [m for m, y in zip(traded, years, strict=True) if y > 0]
                prices = bs_price(np.array([spot(m) for m in traded]), strike, years[years > 0], rate, vol, right == "C")
                # Clipped at zero: a far out-of-the-money price can come out a rounding error below it.
                bars = [_bar(starts[m], max(float(p), 0.0), 1 + m % 7) for m, p in zip(traded, prices, strict=True)]
                state.option_bars[symbol] = bars


def _bar(start: datetime, price: float, volume: int) -> dict[str, Any]:
    stamp = start.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"t": stamp, "o": price, "h": price, "l": price, "c": price, "v": volume, "n": 1, "vw": price}


def _contract(symbol: str, underlying: str, expiry: date, right: str, strike: float, expired: bool) -> dict[str, Any]:
    """A listing as the trading API sends it (strike, size and open interest as strings)."""
    return {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, symbol)), "symbol": symbol,
        "name": f"{underlying} {expiry:%b %d %Y} {strike} {'Call' if right == 'C' else 'Put'}",
        "status": "inactive" if expired else "active", "tradable": not expired,
        "expiration_date": expiry.isoformat(), "root_symbol": underlying, "underlying_symbol": underlying,
        "underlying_asset_id": str(uuid.uuid5(uuid.NAMESPACE_URL, underlying)),
        "type": "call" if right == "C" else "put", "style": "american", "strike_price": str(strike), "size": "100",
        # Today's open interest: what the endpoint serves, whatever day the chain is rebuilt for.
        "open_interest": "1234", "open_interest_date": "2025-01-02", "close_price": "1.5",
        "close_price_date": "2025-01-02",
    }


def live_chain(underlying: str, spot: float) -> dict[str, dict]:
    """`underlying`'s chain as the snapshot endpoint sends it now: 3 expiries x 10 strikes around `spot` x calls and
    puts, each with a quote, implied volatility and greeks (no trade)."""
    quote = {"t": "2024-07-05T14:00:00Z", "ax": "C", "ap": 0.0, "as": 5, "bx": "C", "bp": 0.0, "bs": 7, "c": ["A"]}
    chain = {}
    for expiry in ("240712", "240719", "240816"):
        for strike in range(int(spot) - 25, int(spot) + 25, 5):
            for right in ("C", "P"):
                mid = max(1.0, (spot - strike) if right == "C" else (strike - spot)) + 2.0
                chain[f"{underlying}{expiry}{right}{strike * 1000:08d}"] = {
                    "latestQuote": quote | {"bp": round(mid - 0.05, 2), "ap": round(mid + 0.05, 2)},
                    "impliedVolatility": 0.2,
                    "greeks": {"delta": 0.5 if right == "C" else -0.5, "gamma": 0.01, "rho": 0.1, "theta": -0.2,
                               "vega": 0.3},
                }
    return chain
