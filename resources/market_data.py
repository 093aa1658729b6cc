"""The market data source as a Dagster resource: which source feeds the raw tables, and its settings.

Every field left unset falls back to an environment variable read when a run uses the resource (never at
import): PIPELINE_SOURCE, PIPELINE_SYMBOLS (the brokers' universe), PIPELINE_SYNTHETIC_SEED / _SYMBOLS / _ALPHA / _SNAPSHOT_MINUTES, ALPACA_API_KEY /
ALPACA_SECRET_KEY. Credentials are only read when their source is chosen, and never go into logs or metadata.
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
from pydantic import Field

from pipeline.market.source import MarketSource, SourceAuthError
from pipeline.market.synthetic_config import SyntheticMarketConfig

SOURCES = ("synthetic", "files", "alpaca", "ibkr")


class MarketDataResource(dg.ConfigurableResource):
    """Chooses and builds the `MarketSource` behind the ingest assets."""

    source: str | None = Field(
        default=None, description="synthetic | files | alpaca | ibkr; unset: PIPELINE_SOURCE, else synthetic."
    )
    seed: int | None = Field(default=None, description="Synthetic market seed; unset: PIPELINE_SYNTHETIC_SEED.")
    symbols: list[str] | None = Field(
        default=None,
        description="Symbols to ingest; unset: for alpaca/ibkr PIPELINE_SYMBOLS (comma-separated, required), for "
        "synthetic PIPELINE_SYNTHETIC_SYMBOLS or its default universe, for files every symbol of the landed files.",
    )
    alpha: float | None = Field(
        default=None, description="Planted predictable component of the synthetic market (0: martingale)."
    )
    snapshot_minutes: int | None = Field(
        default=None, description="Minutes between synthetic option-chain snapshots."
    )
    landing_dir: str | None = Field(
        default=None, description="Folder of landing/<table>/ files; unset: <data lake>/landing."
    )
    alpaca_api_key: str | None = Field(default=None, description="Alpaca key id; unset: ALPACA_API_KEY.")
    alpaca_secret_key: str | None = Field(default=None, description="Alpaca secret; unset: ALPACA_SECRET_KEY.")
    alpaca_url_override: str | None = Field(
        default=None,
        description="Base URL the Alpaca SDK calls instead of Alpaca's data API (a proxy, or a local test server).",
    )
    alpaca_retry_base_delay_s: float = Field(
        default=1.0,
        gt=0,
        description="Backoff cap before the first retry of a 429/5xx/network error; doubles per attempt (max 30 s).",
    )
    ibkr_host: str = Field(default="127.0.0.1", description="TWS / IB Gateway host.")
    ibkr_port: int = Field(default=7497, description="TWS / IB Gateway port (7497 paper TWS, 4002 paper gateway).")
    ibkr_client_id: int = Field(default=17, description="API client id, unique per connection to TWS.")
    ibkr_connect_timeout_s: float = Field(
        default=10.0, gt=0, description="Seconds to wait for TWS / IB Gateway to accept the API connection."
    )

    def source_name(self) -> str:
        name = (self.source or os.environ.get("PIPELINE_SOURCE") or "synthetic").strip().lower()
        if name not in SOURCES:
            raise ValueError(
                f"unknown market source {name!r}; set PIPELINE_SOURCE (or the resource's `source`) to one of "
                f"{', '.join(SOURCES)}"
            )
        return name

    def synthetic_config(self) -> SyntheticMarketConfig:
        """The synthetic market config: environment defaults, overridden by the fields that are set."""
        overrides = {
            "seed": self.seed,
            "symbols": tuple(self.symbols) if self.symbols is not None else None,
            "alpha": self.alpha,
            "snapshot_minutes": self.snapshot_minutes,
        }
        return SyntheticMarketConfig.from_env(**{k: v for k, v in overrides.items() if v is not None})

    def universe(self) -> list[str]:
        """The symbols every source is asked for: `symbols` if set, else all for files, PIPELINE_SYMBOLS for the
        brokers, the synthetic universe for synthetic.

        Landed files define their own universe; filtering them by the synthetic tickers would drop their rows
        before validation, counted neither as accepted nor as rejected.
        """
        if self.symbols:
            return list(self.symbols)
        name = self.source_name()
        if name == "files":
            return []
        if name == "synthetic":
            return list(self.synthetic_config().symbols)
        # A broker has no universe of its own: asking it for the synthetic tickers would ingest nothing useful.
        listed = [s.strip().upper() for s in os.environ.get("PIPELINE_SYMBOLS", "").split(",") if s.strip()]
        if not listed:
            raise ValueError(
                f"source {name!r} needs a universe: set PIPELINE_SYMBOLS=SPY,QQQ,... (comma-separated) or the "
                "market_data resource's `symbols` field"
            )
        return listed

    def landing_path(self, lake_dir: Path) -> Path:
        """The folder of landing/<table>/ files the files source reads (and the landing sensor watches)."""
        return Path(self.landing_dir) if self.landing_dir else lake_dir / "landing"

    def build_source(self, lake_dir: Path) -> MarketSource:
        """A ready source; raises SourceAuthError naming the variable when a broker's credentials are missing."""
        name = self.source_name()
        if name == "synthetic":
            from pipeline.market.synthetic import SyntheticMarket

            return SyntheticMarket(self.synthetic_config())
        if name == "files":
            from pipeline.market.file_source import FileSource

            return FileSource(self.landing_path(lake_dir))
        if name == "alpaca":
            api_key = _secret(self.alpaca_api_key, "ALPACA_API_KEY")
            secret_key = _secret(self.alpaca_secret_key, "ALPACA_SECRET_KEY")
            from pipeline.market.alpaca_source import AlpacaSource
            from pipeline.market.retry import RetryPolicy

            return AlpacaSource(
                api_key=api_key,
                secret_key=secret_key,
                url_override=self.alpaca_url_override,
                retry=RetryPolicy(base_delay_s=self.alpaca_retry_base_delay_s),
            )
        from pipeline.market.ibkr_source import IBKRSource

        return IBKRSource(
            host=self.ibkr_host,
            port=self.ibkr_port,
            client_id=self.ibkr_client_id,
            connect_timeout_s=self.ibkr_connect_timeout_s,
        )


def _secret(value: str | None, env_var: str) -> str:
    secret = value or os.environ.get(env_var)
    if not secret:
        raise SourceAuthError(
            f"{env_var} is not set; export it (or set the resource field) to ingest from Alpaca, "
            "or use PIPELINE_SOURCE=synthetic for the embedded market"
        )
    return secret


def alpaca_key_fields() -> dict[str, dg.EnvVar]:
    """EnvVar wiring for the Alpaca keys, for the variables that are set (unset ones error only when used)."""
    names = {"alpaca_api_key": "ALPACA_API_KEY", "alpaca_secret_key": "ALPACA_SECRET_KEY"}
    return {field: dg.EnvVar(var) for field, var in names.items() if os.environ.get(var)}
