"""The one interface every market source implements (synthetic, files, Alpaca, IBKR)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Protocol, runtime_checkable

import polars as pl


@dataclass(frozen=True)
class TradingSession:
    """One exchange session: the trading day and its open/close as UTC datetimes (early closes included)."""

    trading_day: date
    open: datetime
    close: datetime

    @property
    def minutes(self) -> int:
        return int((self.close - self.open).total_seconds() // 60)


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


class SourceUnavailableError(SourceError):
    """The service could not be reached (TWS/Gateway down, network error after retries)."""
