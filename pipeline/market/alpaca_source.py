"""The Alpaca market source: historical trades, quotes, 1-minute bars and option-chain snapshots via alpaca-py.

alpaca-py pages through `next_page_token` itself (limit=None consumes every page) but retries only 429/504 with a
fixed 3 s sleep. Its own retry is switched off and every call is wrapped in `RetryPolicy` instead: exponential
backoff with jitter on 429, 5xx, timeouts and connection errors, bounded, then `SourceUnavailableError`.
The secret key never leaves this object: it is held in a redacting wrapper, and error texts are built here
without chaining the SDK's exceptions (their request objects carry the auth headers).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import polars as pl
import requests
from alpaca.common.exceptions import APIError
from alpaca.common.rest import RESTClient
from alpaca.data.enums import DataFeed
from alpaca.data.historical.option import OptionHistoricalDataClient
from alpaca.data.historical.stock import StockHistoricalDataClient
from alpaca.data.requests import (
    OptionChainRequest,
    StockBarsRequest,
    StockLatestQuoteRequest,
    StockLatestTradeRequest,
    StockQuotesRequest,
    StockTradesRequest,
)
from alpaca.data.timeframe import TimeFrame
from requests.adapters import HTTPAdapter

from pipeline.market import alpaca_rows
from pipeline.market.calendar import NY_TZ
from pipeline.market.retry import RetryPolicy
from pipeline.market.schemas import RAW_COLUMNS, RAW_TABLES, conform, empty_frame
from pipeline.market.source import SourceAuthError, SourceError, SourceUnavailableError, TradingSession

logger = logging.getLogger(__name__)

API_KEY_ENV = "ALPACA_API_KEY"
SECRET_KEY_ENV = "ALPACA_SECRET_KEY"
_NEW_YORK = ZoneInfo(NY_TZ)
T = TypeVar("T")


class _Secret:
    """Holds a credential; every way of printing it prints '***'."""

    __slots__ = ("_value",)

    def __init__(self, value: str | None) -> None:
        self._value = value or ""

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "'***'" if self._value else "''"

    __str__ = __repr__


class _TimeoutAdapter(HTTPAdapter):
    """alpaca-py sends requests without a timeout; a hung connection would block the run forever."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__()
        self._timeout_s = timeout_s

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self._timeout_s
        return super().send(request, **kwargs)


def _status(exc: BaseException) -> int | None:
    return exc.status_code if isinstance(exc, APIError) else None


def is_transient(exc: BaseException) -> bool:
    """429, 5xx, timeouts, connection errors and bodies cut short are worth retrying; anything else is not."""
    if isinstance(exc, requests.ConnectionError | requests.Timeout | requests.exceptions.ChunkedEncodingError):
        return True
    status = _status(exc)
    return status is not None and (status == 429 or status >= 500)


class AlpacaSource:
    """Fetches one trading day from Alpaca's market data API (stocks v2, options v1beta1)."""

    name = "alpaca"

    def __init__(
        self,
        api_key: str | None,
        secret_key: str | None,
        *,
        feed: str | None = None,
        url_override: str | None = None,
        retry: RetryPolicy | None = None,
        request_timeout_s: float = 30.0,
        stock_client_factory: Callable[..., StockHistoricalDataClient] = StockHistoricalDataClient,
        option_client_factory: Callable[..., OptionHistoricalDataClient] = OptionHistoricalDataClient,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        """`feed`: 'iex' (free plans) or 'sip'; None lets Alpaca pick. `url_override`: a proxy or test server.

        `clock` stamps option-chain snapshots (Alpaca serves the current chain only).
        """
        self._api_key = api_key or ""
        self._secret = _Secret(secret_key)
        feeds = [f.value for f in DataFeed]
        if feed and feed not in feeds:
            raise ValueError(f"unknown Alpaca feed {feed!r}: use one of {feeds} ('iex' on free plans), or None")
        self.feed = DataFeed(feed) if feed else None
        self.url_override = url_override
        self.retry = retry or RetryPolicy()
        self.request_timeout_s = request_timeout_s
        self._stock_factory = stock_client_factory
        self._option_factory = option_client_factory
        self._clock = clock
        self._stock: StockHistoricalDataClient | None = None
        self._option: OptionHistoricalDataClient | None = None

    def __repr__(self) -> str:
        key = f"{self._api_key[:4]}..." if self._api_key else ""
        return f"AlpacaSource(api_key={key!r}, secret_key={self._secret!r}, feed={self.feed!r})"

    def _client(self, factory: Callable[..., T]) -> T:
        # Checked at first use, not construction, so code locations load without credentials.
        for value, env in ((self._api_key, API_KEY_ENV), (self._secret, SECRET_KEY_ENV)):
            if not value:
                raise SourceAuthError(
                    f"{env} is not set: export your Alpaca {'API key id' if env == API_KEY_ENV else 'secret key'} "
                    f"in {env} (both {API_KEY_ENV} and {SECRET_KEY_ENV} are needed), or use another source."
                )
        client = factory(api_key=self._api_key, secret_key=self._secret.reveal(), url_override=self.url_override)
        if isinstance(client, RESTClient):
            client._retry = 0  # our RetryPolicy owns retries (backoff + jitter, injectable sleep)
            adapter = _TimeoutAdapter(self.request_timeout_s)
            client._session.mount("https://", adapter)
            client._session.mount("http://", adapter)
        return client

    def _stock_client(self) -> StockHistoricalDataClient:
        if self._stock is None:
            self._stock = self._client(self._stock_factory)
        return self._stock

    def _option_client(self) -> OptionHistoricalDataClient:
        if self._option is None:
            self._option = self._client(self._option_factory)
        return self._option

    def _call(self, fn: Callable[[], T], what: str) -> T:
        """Run one SDK call under the retry policy and turn its failures into actionable SourceErrors.

        A retry repeats the whole paged call from its first page: the SDK keeps no page state between calls.
        """
        try:
            return self.retry.call(fn, is_transient, f"alpaca {what}")
        except (APIError, requests.RequestException) as exc:
            raise self._translate(exc, what) from None

    def _translate(self, exc: BaseException, what: str) -> SourceError:
        status = _status(exc)
        if status in (401, 403):
            return SourceAuthError(
                f"Alpaca rejected the API keys (HTTP {status}) for {what}: check {API_KEY_ENV} and "
                f"{SECRET_KEY_ENV} (a paper-trading key pair works for market data; regenerate them if revoked)."
            )
        attempts = self.retry.max_attempts
        if isinstance(exc, requests.RequestException):
            return SourceUnavailableError(
                f"could not reach Alpaca for {what} after {attempts} attempts ({type(exc).__name__}); "
                "check the network connection and https://status.alpaca.markets, then retry the run."
            )
        detail = self._safe_detail(exc)
        if is_transient(exc):
            return SourceUnavailableError(
                f"Alpaca kept failing for {what}: HTTP {status} after {attempts} attempts ({detail}); "
                "retry later or lower the request rate."
            )
        return SourceError(f"Alpaca refused {what}: HTTP {status} ({detail}); check the symbols and the feed.")

    def _safe_detail(self, exc: BaseException) -> str:
        """The API's error message, shortened, with the secret blanked out should a server ever echo it."""
        try:
            text = str(exc.message) if isinstance(exc, APIError) else str(exc)
        except ValueError:  # the body was not JSON
            text = str(exc)
        secret = self._secret.reveal()
        return (text.replace(secret, "***") if secret else text)[:200]

    def fetch(self, table: str, session: TradingSession, symbols: Sequence[str]) -> pl.DataFrame:
        """One trading day of `table` for `symbols` (all pages), ts in UTC, rows inside the session."""
        if table not in RAW_TABLES:
            raise SourceError(f"unknown table {table!r}; the Alpaca source serves {list(RAW_TABLES)}")
        symbols = list(symbols)
        if not symbols:
            return empty_frame(table)
        rows = getattr(self, f"_fetch_{table}")(session, symbols)
        frame = pl.DataFrame(rows, schema={c: t for c, t in RAW_COLUMNS[table].items()
                                           if c not in ("source", "trading_day")})
        frame = frame.with_columns(pl.lit(self.name).alias("source"), pl.lit(session.trading_day).alias("trading_day"))
        logger.info("alpaca: %d %s rows for %s on %s", frame.height, table, symbols, session.trading_day)
        return conform(table, frame)

    def _window(self, session: TradingSession) -> dict[str, Any]:
        return {"start": session.open, "end": session.close, "feed": self.feed}

    def _fetch_trades(self, session: TradingSession, symbols: list[str]) -> list[dict[str, Any]]:
        request = StockTradesRequest(symbol_or_symbols=symbols, **self._window(session))
        trades = self._call(lambda: self._stock_client().get_stock_trades(request), "stock trades")
        return alpaca_rows.trade_rows(trades, session.open, session.close)

    def _fetch_quotes(self, session: TradingSession, symbols: list[str]) -> list[dict[str, Any]]:
        request = StockQuotesRequest(symbol_or_symbols=symbols, **self._window(session))
        quotes = self._call(lambda: self._stock_client().get_stock_quotes(request), "stock quotes")
        return alpaca_rows.quote_rows(quotes, session.open, session.close)

    def _fetch_bars(self, session: TradingSession, symbols: list[str]) -> list[dict[str, Any]]:
        request = StockBarsRequest(symbol_or_symbols=symbols, timeframe=TimeFrame.Minute, **self._window(session))
        bars = self._call(lambda: self._stock_client().get_stock_bars(request), "stock bars")
        return alpaca_rows.bar_rows(bars, "1m", session.open, session.close)

    def _fetch_option_snapshots(self, session: TradingSession, symbols: list[str]) -> list[dict[str, Any]]:
        snapshot_ts = self._clock().astimezone(UTC)
        if snapshot_ts.astimezone(_NEW_YORK).date() != session.trading_day:
            # The chain endpoint has no history: today's chain must not be filed under another day.
            logger.warning(
                "alpaca: option chains are live snapshots only; skipping option_snapshots for %s (it is %s "
                "in New York). Land historical chains as files under landing/option_snapshots/ instead.",
                session.trading_day, snapshot_ts.astimezone(_NEW_YORK).date(),
            )
            return []
        stock = self._stock_client()
        latest_trades = self._call(
            lambda: stock.get_stock_latest_trade(StockLatestTradeRequest(symbol_or_symbols=symbols, feed=self.feed)),
            "latest stock trades",
        )
        latest_quotes = self._call(
            lambda: stock.get_stock_latest_quote(StockLatestQuoteRequest(symbol_or_symbols=symbols, feed=self.feed)),
            "latest stock quotes",
        )
        rows: list[dict[str, Any]] = []
        for underlying in symbols:
            chain = self._call(
                lambda u=underlying: self._option_client().get_option_chain(OptionChainRequest(underlying_symbol=u)),
                f"option chain of {underlying}",
            )
            spot = alpaca_rows.underlying_price(latest_trades.get(underlying), latest_quotes.get(underlying))
            rows.extend(alpaca_rows.option_rows(underlying, spot, chain, snapshot_ts))
        return rows
