"""What Alpaca's errors mean: which are worth retrying and after how long, and the message a user can act on.

alpaca-py raises `alpaca.common.exceptions.APIError` for an HTTP error, with the response attached (`status_code`,
`response.headers`, the body's JSON `message`), and lets requests' own exceptions (connection errors, timeouts)
through. A 429 may say when to come back: `Retry-After` (seconds or an HTTP date) or Alpaca's
`X-RateLimit-Reset` (the epoch second its window resets). A 403 is either a rejected key ("forbidden.") or a key
whose plan does not cover the request ("subscription does not permit querying recent SIP data"): the fixes differ.
Messages are built here, never by chaining the SDK's exceptions: their request objects carry the auth headers.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import requests
from alpaca.common.exceptions import APIError

from pipeline.sources.base import (
    SourceAuthError,
    SourceError,
    SourceSubscriptionError,
    SourceUnavailableError,
)
from pipeline.sources.retry import RetryPolicy, Transient

API_KEY_ENV = "ALPACA_API_KEY"
SECRET_KEY_ENV = "ALPACA_SECRET_KEY"
# The 403 bodies that mean the key pair itself was refused; any other 403 is a plan or agreement limit.
REJECTED_KEY_MESSAGES = frozenset({"forbidden", "unauthorized", "request is not authorized",
                                   "access key verification failed"})
# Alpaca's windows reset on whole seconds: a shorter wait would only be refused again.
MIN_SERVER_WAIT_S = 1.0
_UNREACHABLE = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)


def status(exc: BaseException) -> int | None:
    return exc.status_code if isinstance(exc, APIError) else None


def _headers(exc: BaseException) -> Mapping[str, str]:
    response = exc.response if isinstance(exc, APIError) else None
    return response.headers if response is not None else {}


def retry_after_s(headers: Mapping[str, str], now: datetime) -> float | None:
    """The wait a `Retry-After` header asks for (delta seconds or an HTTP date), None without a usable one."""
    value = (headers.get("Retry-After") or "").strip()
    if not value:
        return None
    try:
        return max(MIN_SERVER_WAIT_S, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    when = when if when.tzinfo else when.replace(tzinfo=UTC)
    return max(MIN_SERVER_WAIT_S, (when - now).total_seconds())


def rate_limit_reset_s(headers: Mapping[str, str], now: datetime) -> float | None:
    """Seconds until Alpaca's rate-limit window resets (`X-RateLimit-Reset`, epoch seconds), None without one."""
    try:
        reset = float(headers.get("X-RateLimit-Reset") or "")
    except ValueError:
        return None
    return max(MIN_SERVER_WAIT_S, reset - now.timestamp())


def classify(exc: BaseException, now: datetime) -> Transient | None:
    """429 (waited out as asked), 5xx, timeouts, connection errors and bodies cut short are worth retrying."""
    if isinstance(exc, _UNREACHABLE):
        return Transient()
    code = status(exc)
    headers = _headers(exc)
    if code == 429:
        wait = retry_after_s(headers, now)
        return Transient(rate_limited=True, wait_s=wait if wait is not None else rate_limit_reset_s(headers, now))
    if code is not None and code >= 500:
        return Transient(wait_s=retry_after_s(headers, now))
    return None


def safe_detail(exc: BaseException, secret: str) -> str:
    """The API's error message, shortened, with the secret blanked out should a server ever echo it."""
    try:
        text = str(exc.message) if isinstance(exc, APIError) else str(exc)
    except (ValueError, KeyError, TypeError):  # the body was not Alpaca's JSON
        text = str(exc)
    return (text.replace(secret, "***") if secret else text)[:200]


def translate(exc: BaseException, what: str, retry: RetryPolicy, secret: str) -> SourceError:
    """The SourceError a user can act on for an SDK failure that retrying did not (or could not) cure."""
    code = status(exc)
    detail = safe_detail(exc, secret)
    if code == 401 or (code == 403 and detail.strip(" .").lower() in REJECTED_KEY_MESSAGES | {""}):
        return SourceAuthError(
            f"Alpaca rejected the API keys (HTTP {code}: {detail}) for {what}: check {API_KEY_ENV} and "
            f"{SECRET_KEY_ENV} (a paper-trading key pair works for market data; regenerate them if revoked)."
        )
    if code == 403:
        return SourceSubscriptionError(
            f"Alpaca accepted the API keys, but their market data plan does not cover {what} (HTTP 403: {detail}). "
            "The free plan serves the IEX feed, SIP data older than 15 minutes, and options once the OPRA agreement "
            "is signed on the dashboard: ask for older data or the IEX feed, or upgrade the subscription."
        )
    if isinstance(exc, requests.RequestException):
        return SourceUnavailableError(
            f"could not reach Alpaca for {what} after {retry.max_attempts} attempts ({type(exc).__name__}); "
            "check the network connection and https://status.alpaca.markets, then retry the run."
        )
    if code == 429:
        return SourceUnavailableError(
            f"Alpaca kept rate-limiting {what} (HTTP 429) past the {retry.rate_limit_budget_s:g} s a request may "
            "wait it out: raise `alpaca_rate_limit_budget_s` on the market_data resource, ingest fewer symbols per "
            "run, or stop other clients that use these keys."
        )
    if code is not None and code >= 500:
        return SourceUnavailableError(
            f"Alpaca kept failing for {what}: HTTP {code} after {retry.max_attempts} attempts ({detail}); "
            "retry later or lower the request rate."
        )
    return SourceError(f"Alpaca refused {what}: HTTP {code} ({detail}); check the symbols and the feed.")
