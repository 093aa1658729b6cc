"""The Alpaca market source: historical trades, quotes, 1-minute bars and option-chain snapshots via alpaca-py.

Option chains: today's is Alpaca's live chain (`current_chain`); a past day's, from February 2024 on, is rebuilt
from the contract list (trading API) and 1-minute bars by `pipeline.sources.alpaca_history`.

alpaca-py pages through `next_page_token` itself (limit=None consumes every page) but retries only 429/504 with a
fixed 3 s sleep. Its own retry is switched off and each HTTP request it sends goes through `RetryPolicy` instead, so
a failed page is asked for again where the SDK's paging loop stands, never from page 1: exponential backoff with
jitter on 5xx, timeouts and connection errors, bounded, then `SourceUnavailableError`; a 429 is waited out as the
server asks (`Retry-After`, `X-RateLimit-Reset`) within the policy's time budget. What each error means is
`pipeline.sources.alpaca_errors`. The secret key never leaves this object: it is held in a redacting wrapper, and
error texts are built without chaining the SDK's exceptions (their request objects carry the auth headers).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import polars as pl
import requests
from alpaca.common.exceptions import APIError
from alpaca.common.rest import RESTClient
from alpaca.data.enums import DataFeed
from alpaca.data.historical.option import OptionHistoricalDataClient
from alpaca.data.historical.stock import StockHistoricalDataClient
from alpaca.data.models import Bar
from alpaca.data.requests import (
    OptionBarsRequest,
    OptionChainRequest,
    StockBarsRequest,
    StockLatestQuoteRequest,
    StockLatestTradeRequest,
    StockQuotesRequest,
    StockTradesRequest,
)
from alpaca.data.timeframe import TimeFrame
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import AssetStatus
from alpaca.trading.models import OptionContract
from alpaca.trading.requests import GetOptionContractsRequest
from requests.adapters import HTTPAdapter

from pipeline.contract.calendar import NY_TZ, TradingSession
from pipeline.contract.schemas import RAW_COLUMNS, RAW_TABLES, conform, empty_frame
from pipeline.sources import alpaca_errors, alpaca_history, alpaca_rows
from pipeline.sources.alpaca_errors import API_KEY_ENV, SECRET_KEY_ENV
from pipeline.sources.alpaca_history import OPTION_HISTORY_START, ChainSettings
from pipeline.sources.base import SourceAuthError, SourceError
from pipeline.sources.retry import RetryPolicy, Transient

logger = logging.getLogger(__name__)

# Option symbols per bars request: keeps each request's URL short whatever the chain's size.
OPTION_BARS_BATCH = 100
# Contracts per page of the trading API's contract list (its maximum; it defaults to 100).
CONTRACTS_PAGE = 10_000
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


# A chain whose freshest quote is older than this was not live: the free plans' "indicative" option feed is delayed
# about 15 minutes.
DELAYED_CHAIN_AGE = timedelta(minutes=10)


def chain_is_delayed(underlying: str, chain: dict[str, Any], fetched: datetime) -> bool | None:
    """Whether the chain's quotes came from a delayed feed (None: no quote to tell by). Quotes older than the fetch
    time they are stamped with are fine to try the collector on, not to train on: the rows say so in `delayed`."""
    times = [s.latest_quote.timestamp for s in chain.values() if s.latest_quote is not None]
    if not times:
        return None
    if fetched - max(times) <= DELAYED_CHAIN_AGE:
        return False
    logger.warning(
        "alpaca: the freshest quote of %s's option chain is %s old at %s: a delayed feed (the free plans' "
        "'indicative' one)? Its rows are stamped with the fetch time and marked delayed; do not train on them as "
        "live chains.", underlying, fetched - max(times), fetched.isoformat(timespec="seconds"),
    )
    return True


class AlpacaSource:
    """Fetches one trading day from Alpaca's market data API (stocks v2, options v1beta1) and, for past option
    chains, the contract list of its trading API."""

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
        trading_client_factory: Callable[..., TradingClient] = TradingClient,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        snapshot_minutes: int = ChainSettings.snapshot_minutes,
        option_expiry_days: int = ChainSettings.expiry_days,
        option_strike_band: float = ChainSettings.strike_band,
        risk_free_rate: float = ChainSettings.risk_free_rate,
        max_staleness_minutes: int | None = ChainSettings.max_staleness_minutes,
    ) -> None:
        """`feed`: 'iex' (free plans) or 'sip'; None lets Alpaca pick. `url_override`: a proxy or test server, for the
        market data and the trading API alike (the trading client is the paper one: it lists the same contracts).

        `clock` stamps live option-chain snapshots and tells today (live chain) from a past day (reconstructed).
        Past-day chains (each is a field of `pipeline.sources.alpaca_history.ChainSettings`): `snapshot_minutes`
        between snapshots; `option_expiry_days`: contracts expiring within this many calendar days of the day;
        `option_strike_band`: strikes within this fraction of the underlying's price at the first snapshot;
        `risk_free_rate`: the constant annual rate for iv and greeks; `max_staleness_minutes`: a last trade older
        than this leaves iv and greeks null (None: the snapshot interval).
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
        self.history = ChainSettings(
            snapshot_minutes=snapshot_minutes, expiry_days=option_expiry_days, strike_band=option_strike_band,
            risk_free_rate=risk_free_rate, max_staleness_minutes=max_staleness_minutes,
        )
        self._stock_factory = stock_client_factory
        self._option_factory = option_client_factory
        self._trading_factory = trading_client_factory
        self._clock = clock
        self._stock: StockHistoricalDataClient | None = None
        self._option: OptionHistoricalDataClient | None = None
        self._trading: TradingClient | None = None

    def __repr__(self) -> str:
        key = f"{self._api_key[:4]}..." if self._api_key else ""
        return f"AlpacaSource(api_key={key!r}, secret_key={self._secret!r}, feed={self.feed!r})"

    def _client(self, factory: Callable[..., T], **options: Any) -> T:
        # Checked at first use, not construction, so code locations load without credentials.
        for value, env in ((self._api_key, API_KEY_ENV), (self._secret, SECRET_KEY_ENV)):
            if not value:
                raise SourceAuthError(
                    f"{env} is not set: export your Alpaca {'API key id' if env == API_KEY_ENV else 'secret key'} "
                    f"in {env} (both {API_KEY_ENV} and {SECRET_KEY_ENV} are needed), or use another source."
                )
        client = factory(
            api_key=self._api_key, secret_key=self._secret.reveal(), url_override=self.url_override, **options
        )
        if isinstance(client, RESTClient):
            client._retry = 0  # our RetryPolicy owns retries (backoff + jitter, injectable sleep)
            adapter = _TimeoutAdapter(self.request_timeout_s)
            client._session.mount("https://", adapter)
            client._session.mount("http://", adapter)
            # One HTTP request is what gets retried: the SDK's paging loop calls _request once per page, so a
            # retry asks again for the page that failed and the pages already read are kept.
            send = client._request

            def request_with_retries(method: str, path: str, *args: Any, **kwargs: Any) -> Any:
                return self.retry.call(lambda: send(method, path, *args, **kwargs), self._classify,
                                       f"alpaca {method} {path}")

            client._request = request_with_retries
        return client

    def _classify(self, exc: BaseException) -> Transient | None:
        return alpaca_errors.classify(exc, self._clock())

    def _stock_client(self) -> StockHistoricalDataClient:
        if self._stock is None:
            self._stock = self._client(self._stock_factory)
        return self._stock

    def _option_client(self) -> OptionHistoricalDataClient:
        if self._option is None:
            self._option = self._client(self._option_factory)
        return self._option

    def _trading_client(self) -> TradingClient:
        if self._trading is None:
            # Paper: a paper key pair is all market data needs, and the paper API lists the same contracts.
            self._trading = self._client(self._trading_factory, paper=True)
        return self._trading

    def _call(self, fn: Callable[[], T], what: str) -> T:
        """Run one SDK call (its requests retried one by one, see `_client`) and turn its failure into an actionable
        SourceError."""
        try:
            return fn()
        except (APIError, requests.RequestException) as exc:
            raise alpaca_errors.translate(exc, what, self.retry, self._secret.reveal()) from None

    def fetch(self, table: str, session: TradingSession, symbols: Sequence[str]) -> pl.DataFrame:
        """One trading day of `table` for `symbols` (all pages), ts in UTC, rows inside the session.

        option_snapshots: on today (in New York) the live chain; on a past day from OPTION_HISTORY_START on, the
        chain rebuilt from bars (`reconstructed` True); on any other day nothing, with a warning that says why.
        """
        if table not in RAW_TABLES:
            raise SourceError(f"unknown table {table!r}; the Alpaca source serves {list(RAW_TABLES)}")
        symbols = list(symbols)
        if not symbols:
            return empty_frame(table)
        if table == "option_snapshots":
            frame = self._option_snapshots(session, symbols)
        else:
            rows = getattr(self, f"_fetch_{table}")(session, symbols)
            frame = self._frame(table, rows, pl.lit(session.trading_day))
        logger.info("alpaca: %d %s rows for %s on %s", frame.height, table, symbols, session.trading_day)
        return frame

    def _frame(self, table: str, rows: list[dict[str, Any]], trading_day: pl.Expr) -> pl.DataFrame:
        schema = {c: t for c, t in RAW_COLUMNS[table].items() if c not in ("source", "trading_day")}
        frame = pl.DataFrame(rows, schema=schema)
        return conform(table, frame.with_columns(pl.lit(self.name).alias("source"), trading_day.alias("trading_day")))

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

    def _option_snapshots(self, session: TradingSession, symbols: list[str]) -> pl.DataFrame:
        day = session.trading_day
        today = self._clock().astimezone(_NEW_YORK).date()
        if day == today:
            return self.current_chain(symbols)
        if day < OPTION_HISTORY_START or day > today:
            why = (f"Alpaca's option history starts on {OPTION_HISTORY_START}" if day < OPTION_HISTORY_START
                   else f"it is only {today} in New York")
            logger.warning(
                "alpaca: no option_snapshots for %s: %s. Land that day's chains as files under "
                "landing/option_snapshots/ instead.", day, why,
            )
            return empty_frame("option_snapshots")
        rows = [row for underlying in symbols for row in self._reconstructed_chain(underlying, session)]
        return self._frame("option_snapshots", rows, pl.lit(day))

    def current_chain(self, underlyings: Sequence[str]) -> pl.DataFrame:
        """The live chain of each underlying as it is now: conformed raw.option_snapshots rows, reconstructed False.

        ts is the clock's time when that underlying's chain was fetched, trading_day its New York date.
        """
        underlyings = list(underlyings)
        if not underlyings:
            return empty_frame("option_snapshots")
        stock = self._stock_client()
        latest_trades = self._call(
            lambda: stock.get_stock_latest_trade(StockLatestTradeRequest(symbol_or_symbols=underlyings, feed=self.feed)),
            "latest stock trades",
        )
        latest_quotes = self._call(
            lambda: stock.get_stock_latest_quote(StockLatestQuoteRequest(symbol_or_symbols=underlyings, feed=self.feed)),
            "latest stock quotes",
        )
        rows: list[dict[str, Any]] = []
        for underlying in underlyings:
            chain = self._call(
                lambda u=underlying: self._option_client().get_option_chain(OptionChainRequest(underlying_symbol=u)),
                f"option chain of {underlying}",
            )
            spot = alpaca_rows.underlying_price(latest_trades.get(underlying), latest_quotes.get(underlying))
            fetched = self._clock().astimezone(UTC)
            delayed = chain_is_delayed(underlying, chain, fetched)
            rows.extend(alpaca_rows.option_rows(underlying, spot, chain, fetched, delayed))
        return self._frame("option_snapshots", rows, pl.col("ts").dt.convert_time_zone(NY_TZ).dt.date())

    def _reconstructed_chain(self, underlying: str, session: TradingSession) -> list[dict[str, Any]]:
        """Fetch what `alpaca_history` needs for one underlying's past day; the chain is chosen at the first snapshot."""
        request = StockBarsRequest(symbol_or_symbols=underlying, timeframe=TimeFrame.Minute, **self._window(session))
        stock_bars = self._call(lambda: self._stock_client().get_stock_bars(request), f"stock bars of {underlying}")
        underlying_bars = stock_bars.data.get(underlying, [])
        spot = alpaca_history.first_snapshot_spot(underlying_bars, session, self.history)
        if spot is None:
            logger.warning(
                "alpaca: no %s bar ended by the first snapshot of %s, so its chain cannot be chosen without looking "
                "ahead; no option_snapshots for it.", underlying, session.trading_day,
            )
            return []
        listed = self._option_contracts(underlying, session.trading_day, spot)
        contracts = alpaca_history.select_contracts(listed, session.trading_day, spot, self.history)
        option_bars = self._option_bars([c.symbol for c in contracts], session)
        return alpaca_history.reconstruct_chain(underlying, session, contracts, option_bars, underlying_bars,
                                                self.history)

    def _option_contracts(self, underlying: str, day: date, spot: float) -> list[OptionContract]:
        """Live and expired contracts in the day's expiry window and around its strike band, every page."""
        low, high = alpaca_history.strike_bounds(spot, self.history.strike_band)
        client = self._trading_client()
        contracts: list[OptionContract] = []
        for status in (AssetStatus.ACTIVE, AssetStatus.INACTIVE):
            token: str | None = None
            while True:
                request = GetOptionContractsRequest(
                    underlying_symbols=[underlying], status=status, expiration_date_gte=day,
                    expiration_date_lte=day + timedelta(days=self.history.expiry_days),
                    # Whole dollars around the band: a superset, which select_contracts narrows exactly.
                    strike_price_gte=str(math.floor(low)), strike_price_lte=str(math.ceil(high)),
                    limit=CONTRACTS_PAGE, page_token=token,
                )
                # The SDK does not page this endpoint; one call per page, so a retry repeats only the failed page.
                page = self._call(lambda r=request: client.get_option_contracts(r),
                                  f"{status.value} option contracts of {underlying}")
                contracts.extend(page.option_contracts or [])
                token = page.next_page_token
                if not token:
                    break
        return contracts

    def _option_bars(self, contracts: list[str], session: TradingSession) -> dict[str, list[Bar]]:
        bars: dict[str, list[Bar]] = {}
        for i in range(0, len(contracts), OPTION_BARS_BATCH):
            request = OptionBarsRequest(symbol_or_symbols=contracts[i : i + OPTION_BARS_BATCH],
                                        timeframe=TimeFrame.Minute, start=session.open, end=session.close)
            batch = self._call(lambda r=request: self._option_client().get_option_bars(r), "option bars")
            bars.update(batch.data)
        return bars
