"""What the IBKR readers (historical ticks, live option chains) share: one read-only API connection to TWS / IB
Gateway, and what its errors mean for a user."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from ib_async import IB, RequestError

from pipeline.sources.base import SourceError, SourceUnavailableError

UNREACHABLE = (ConnectionError, OSError, TimeoutError, asyncio.TimeoutError)
"""Exceptions meaning TWS could not be reached, or the connection was lost or timed out."""
NO_SUBSCRIPTION = frozenset({354, 10089, 10090, 10168, 10197})
"""TWS error codes meaning the account lacks a market data subscription for the request."""


def where(host: str, port: int, client_id: int) -> str:
    return f"TWS/IB Gateway at {host}:{port} (client id {client_id})"


def connect_readonly(ib: IB, host: str, port: int, client_id: int, connect_timeout_s: float,
                     request_timeout_s: float) -> None:
    """Connect read-only; an unreachable TWS raises SourceUnavailableError saying what to check."""
    try:
        ib.connect(host, port, clientId=client_id, timeout=connect_timeout_s, readonly=True)
    except UNREACHABLE as exc:
        raise SourceUnavailableError(
            f"could not reach {where(host, port, client_id)}: is it running with the API enabled? "
            f"(TWS: Configure > API > Settings > Enable ActiveX and Socket Clients; check the port, and that "
            f"no other session uses client id {client_id}.) Cause: {type(exc).__name__}: {exc}"
        ) from exc
    # ib_async waits forever for an answer unless RequestTimeout is set, and by default turns a failed request
    # into an empty answer; raising lets us tell "no data" from "not allowed".
    ib.RequestTimeout = request_timeout_s
    ib.RaiseRequestErrors = True


def request_failure(exc: RequestError, symbol: str, what: str) -> SourceError | None:
    """The SourceError for a TWS request error, or None when it only means "no data for this window"."""
    text = str(exc.message)
    if exc.code == 162 and "no data" in text.lower():
        return None
    if exc.code == 162 and "pacing" in text.lower():
        return SourceUnavailableError(
            f"IBKR pacing violation on {what} for {symbol} (error 162): wait 10 minutes, then retry with a "
            f"stricter Pacer (fewer max_requests); TWS said: {text}"
        )
    if exc.code == 200:
        return SourceError(f"IBKR has no security definition for {symbol!r} (error 200): check the symbol.")
    if exc.code in NO_SUBSCRIPTION:
        return SourceError(
            f"the IBKR account has no market data subscription for {what} of {symbol} (error {exc.code}): "
            f"subscribe in Client Portal or use another source; TWS said: {text}"
        )
    return SourceError(f"IBKR refused {what} for {symbol} (error {exc.code}): {text}")


def as_utc(ts: datetime) -> datetime:
    """ib_async stamps ticks in its wrapper's default timezone; naive values are UTC epoch conversions."""
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
