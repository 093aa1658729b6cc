"""The one interface every market source implements (synthetic, files, Alpaca, IBKR)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import polars as pl

from pipeline.contract.calendar import TradingSession


@runtime_checkable
class MarketSource(Protocol):
    """Fetches one trading day of one raw table.

    `fetch` returns a polars frame with the columns of `pipeline.contract.schemas.RAW_COLUMNS[table]` (unvalidated:
    bad rows are kept so validation can quarantine them with a reason), or an empty frame when the source has
    nothing for that table. Network sources raise `SourceError` subclasses with a message a user can act on.
    """

    name: str

    def fetch(self, table: str, session: TradingSession, symbols: Sequence[str]) -> pl.DataFrame: ...


class SourceError(RuntimeError):
    """A source could not deliver data; the message says what to fix."""


class SourceAuthError(SourceError):
    """Credentials are missing or were rejected; the message names the environment variable."""


class SourceSubscriptionError(SourceError):
    """The credentials work, but the account's market data plan or agreements do not cover the request."""


class SourceUnavailableError(SourceError):
    """The service could not be reached (TWS/Gateway down, network error after retries)."""
