"""What the IBKR readers (historical ticks, live option chains) share: one read-only API connection to TWS / IB
Gateway, how a request is sent (paced, and asked again after a transient error), and what its errors mean for a
user."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable
from datetime import UTC, datetime
from typing import TypeVar

from ib_async import IB, RequestError

from pipeline.sources.base import SourceError, SourceSubscriptionError, SourceUnavailableError
from pipeline.sources.pacing import Pacer
from pipeline.sources.retry import RetryPolicy, Transient

T = TypeVar("T")

UNREACHABLE = (ConnectionError, OSError, TimeoutError, asyncio.TimeoutError)
"""Exceptions meaning TWS could not be reached, or the connection was lost or timed out."""
NO_SUBSCRIPTION = frozenset({354, 10089, 10090, 10168, 10197})
"""TWS error codes meaning the account lacks a market data subscription for the request."""
CONNECTIVITY = frozenset({1100, 1101, 1102, 2103, 2105, 2110})
"""TWS error codes of its link to IBKR's servers or data farms lost (1100, 2103, 2105, 2110) or restored with the
requests in flight lost (1101, 1102): the request can be asked again."""
# Error 162 ("Historical Market Data Service error message") covers both passing trouble and final answers; these
# words mark the passing kind (a pacing violation, a query the farm cancelled or dropped).
_TRANSIENT_162 = ("pacing violation", "query cancelled", "disconnect", "connection is broken", "timed out")


def retry_policy() -> RetryPolicy:
    """The IBKR readers' retries: 4 attempts with backoff from 2 s (at most 60 s a wait) for timeouts, dropped
    queries and lost connectivity; pacing violations are waited out for up to 10 minutes, IBKR's pacing window."""
    return RetryPolicy(max_attempts=4, base_delay_s=2.0, max_delay_s=60.0, rate_limit_budget_s=600.0)


def classify(exc: BaseException) -> Transient | None:
    """A request timeout, a pacing violation, a dropped historical query or lost connectivity is worth asking
    again; a lost API connection (ConnectionError) is not: that needs a new connection."""
    if isinstance(exc, TimeoutError):  # ib_async's RequestTimeout; asyncio.TimeoutError is TimeoutError
        return Transient()
    if not isinstance(exc, RequestError):
        return None
    if exc.code in CONNECTIVITY:
        return Transient()
    text = str(exc.message).lower()
    if exc.code == 162 and any(words in text for words in _TRANSIENT_162):
        return Transient(rate_limited="pacing violation" in text)
    return None


def paced_request(send: Callable[[], T], pacer: Pacer, retry: RetryPolicy, request: Hashable, group: Hashable,
                  what: str) -> T:
    """`send` once the pacer allows `request`; after a transient error, again (through the pacer, so a repeat keeps
    IBKR's gap between identical requests) with the retry policy's backoff, a bounded number of times."""

    def paced() -> T:
        pacer.wait(request, group=group)
        return send()

    return retry.call(paced, classify, what)


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
            f"IBKR pacing violation on {what} for {symbol} (error 162), still after waiting it out: wait 10 minutes, "
            f"then retry with a stricter Pacer (fewer max_requests); TWS said: {text}"
        )
    if classify(exc) is not None:
        return SourceUnavailableError(
            f"IBKR kept failing {what} for {symbol} (error {exc.code}) through the retries: check TWS's connection "
            f"to IBKR's servers and data farms (its status bar), then retry the run; TWS said: {text}"
        )
    if exc.code == 200:
        return SourceError(f"IBKR has no security definition for {symbol!r} (error 200): check the symbol.")
    if exc.code in NO_SUBSCRIPTION or (exc.code == 162 and "permission" in text.lower()):
        return SourceSubscriptionError(
            f"the IBKR account has no market data subscription for {what} of {symbol} (error {exc.code}): "
            f"subscribe in Client Portal or use another source; TWS said: {text}"
        )
    return SourceError(f"IBKR refused {what} for {symbol} (error {exc.code}): {text}")


def as_utc(ts: datetime) -> datetime:
    """ib_async stamps ticks in its wrapper's default timezone; naive values are UTC epoch conversions."""
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
