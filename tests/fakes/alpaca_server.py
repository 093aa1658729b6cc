"""A local HTTP server that answers like Alpaca's market data API (stocks v2, options v1beta1).

The real alpaca-py clients talk to it through `url_override`, so the SDK's own request, pagination
(`next_page_token`), model parsing (TradeSet, QuoteSet, BarSet, OptionsSnapshot) and APIError paths all run.
"""

from __future__ import annotations

import json
import select
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

HANG = "hang"  # failure script entry: never answer; hold the connection until the client gives up
DROP = "drop"  # failure script entry: close the connection without an answer


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
    failures: list[int | str] = field(default_factory=list)
    """Consumed one per request before answering normally: an HTTP status, HANG or DROP."""
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


class _Handler(BaseHTTPRequestHandler):
    state: FakeAlpacaState
    stopped: threading.Event
    """Set when the server shuts down, so a HANG whose client never hangs up still ends."""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's signature
        """Silence the stdlib's per-request stderr line."""

    def _send(self, status: int, body: dict[str, Any]) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        state = self.state
        url = urlparse(self.path)
        params = {k: v[0] for k, v in parse_qs(url.query).items()}
        state.requests.append((url.path, params))
        if state.failures:
            failure = state.failures.pop(0)
            if failure == DROP:
                self.close_connection = True
                self.connection.shutdown(2)
                return
            if failure == HANG:
                self._hang()
            else:
                self._send(int(failure), {"code": int(failure) * 100000, "message": "injected failure"})
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
        if path == "/v2/stocks/trades/latest":
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
