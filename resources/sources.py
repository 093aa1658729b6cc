"""The market data source as a Dagster resource: which source feeds the raw tables, and its settings.

Every field left unset falls back to the environment, read when a run uses the resource (never at import) by
`pipeline.sources.settings`, the one place that reads the source's variables. Credentials are only read when
their source is chosen, and never go into logs or metadata.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from pydantic import Field

from pipeline.sources.base import MarketSource
from pipeline.sources.option_collector import ChainSource
from pipeline.sources.settings import (
    SourceSettings,
    alpaca_vars_set,
    build_chain_source,
    build_market_source,
)
from pipeline.synthetic.config import SyntheticMarketConfig


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
    option_snapshot_minutes: int | None = Field(
        default=None,
        description="Minutes between a broker's option-chain snapshots (the live collector's interval and the Alpaca "
        "reconstruction's grid); a divisor of 30. Unset: PIPELINE_OPTION_SNAPSHOT_MINUTES, else 15.",
    )
    landing_dir: str | None = Field(
        default=None, description="Folder of landing/<table>/ files; unset: <data lake>/landing."
    )
    # Credentials are kept out of repr and str; wire them with dg.EnvVar so the UI shows the variable, not the value.
    alpaca_api_key: str | None = Field(
        default=None, repr=False, description="Alpaca key id (dg.EnvVar); unset: ALPACA_API_KEY."
    )
    alpaca_secret_key: str | None = Field(
        default=None, repr=False, description="Alpaca secret (dg.EnvVar); unset: ALPACA_SECRET_KEY."
    )
    alpaca_url_override: str | None = Field(
        default=None,
        description="Base URL the Alpaca SDK calls instead of Alpaca's data API (a proxy, or a local test server).",
    )
    alpaca_retry_base_delay_s: float = Field(
        default=1.0,
        gt=0,
        description="Backoff cap before the first retry of a 429/5xx/network error; doubles per attempt (max 30 s).",
    )
    alpaca_rate_limit_budget_s: float = Field(
        default=300.0,
        ge=0,
        description="Seconds one Alpaca request may spend waiting out rate limits (HTTP 429), as long as the server's "
        "Retry-After or X-RateLimit-Reset asks, before the run fails; 429s do not use up the retry attempts.",
    )
    ibkr_host: str = Field(default="127.0.0.1", description="TWS / IB Gateway host.")
    ibkr_port: int = Field(default=7497, description="TWS / IB Gateway port (7497 paper TWS, 4002 paper gateway).")
    ibkr_client_id: int = Field(default=17, description="API client id, unique per connection to TWS.")
    ibkr_connect_timeout_s: float = Field(
        default=10.0, gt=0, description="Seconds to wait for TWS / IB Gateway to accept the API connection."
    )
    ibkr_market_data_type: int = Field(
        default=1, ge=1, le=4,
        description="Market data type of the IBKR option-chain collector: 1 live (needs the subscription, OPRA for "
        "US options), 3 delayed (free), 2 and 4 frozen.",
    )

    def settings(self, source: str | None = None) -> SourceSettings:
        """The core's SourceSettings: environment defaults (read now, at run time), overridden by set fields.

        `source` overrides the resource's own (the collector reads a broker's chain whatever feeds the ingest).
        """
        return SourceSettings.from_env(
            source=source or self.source,
            option_snapshot_minutes=self.option_snapshot_minutes,
            symbols=tuple(self.symbols) if self.symbols else None,
            synthetic_seed=self.seed,
            synthetic_alpha=self.alpha,
            synthetic_snapshot_minutes=self.snapshot_minutes,
            landing_dir=Path(self.landing_dir) if self.landing_dir else None,
            alpaca_api_key=self.alpaca_api_key,
            alpaca_secret_key=self.alpaca_secret_key,
            alpaca_url_override=self.alpaca_url_override,
            alpaca_retry_base_delay_s=self.alpaca_retry_base_delay_s,
            alpaca_rate_limit_budget_s=self.alpaca_rate_limit_budget_s,
            ibkr_host=self.ibkr_host,
            ibkr_port=self.ibkr_port,
            ibkr_client_id=self.ibkr_client_id,
            ibkr_connect_timeout_s=self.ibkr_connect_timeout_s,
            ibkr_market_data_type=self.ibkr_market_data_type,
        )

    def source_name(self) -> str:
        return self.settings().source

    def synthetic_config(self) -> SyntheticMarketConfig:
        """The synthetic market config: environment defaults, overridden by the fields that are set."""
        return self.settings().synthetic

    def universe(self) -> list[str]:
        """The symbols every source is asked for (see `SourceSettings.universe`)."""
        return self.settings().universe()

    def landing_path(self, lake_dir: Path) -> Path:
        """The folder of landing/<table>/ files the files source reads (and the landing sensor watches)."""
        return self.settings().landing_path(lake_dir)

    def chain_source(self, broker: str | None = None) -> ChainSource:
        """The collector's live chain source: `broker` (alpaca or ibkr), else the resource's source."""
        return build_chain_source(self.settings(source=broker))

    def build_source(self, lake_dir: Path) -> MarketSource:
        """A ready source; raises SourceAuthError naming the variable when a broker's credentials are missing."""
        return build_market_source(self.settings(), lake_dir)


def alpaca_key_fields() -> dict[str, dg.EnvVar]:
    """EnvVar wiring for the Alpaca keys, for the variables that are set (unset ones error only when used)."""
    return {name: dg.EnvVar(var) for name, var in alpaca_vars_set().items()}
