"""Which market source feeds the raw tables, its settings, and building it: one home for all three.

`SourceSettings.from_env` is the one place the source's environment variables are read (at call time, never at
import): PIPELINE_SOURCE, PIPELINE_SYMBOLS (the brokers' universe), PIPELINE_SYNTHETIC_{SEED, ALPHA, SYMBOLS,
SNAPSHOT_MINUTES}, ALPACA_API_KEY and ALPACA_SECRET_KEY. `build_market_source` turns settings into a ready
`MarketSource`; the Dagster resource, the benchmarks and the dataset builders all call it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.sources.base import MarketSource, SourceAuthError
from pipeline.sources.option_collector import ChainSource, CollectedChainsFirst
from pipeline.synthetic.config import SyntheticMarketConfig

if TYPE_CHECKING:
    from pipeline.sources.alpaca_source import AlpacaSource

SOURCES = ("synthetic", "files", "alpaca", "ibkr")
SOURCE_VAR = "PIPELINE_SOURCE"
SYMBOLS_VAR = "PIPELINE_SYMBOLS"
SYNTHETIC_PREFIX = "PIPELINE_SYNTHETIC_"
OPTION_MINUTES_VAR = "PIPELINE_OPTION_SNAPSHOT_MINUTES"
DEFAULT_OPTION_SNAPSHOT_MINUTES = 15
BROKERS = ("alpaca", "ibkr")
# Setting name -> environment variable of the Alpaca credentials.
ALPACA_KEY_VARS = {"alpaca_api_key": "ALPACA_API_KEY", "alpaca_secret_key": "ALPACA_SECRET_KEY"}


def _symbol_list(raw: str | None) -> tuple[str, ...]:
    return tuple(s.strip().upper() for s in (raw or "").split(",") if s.strip())


def synthetic_config_from_env(
    environ: Mapping[str, str] | None = None, **overrides: Any
) -> SyntheticMarketConfig:
    """The synthetic market's config from PIPELINE_SYNTHETIC_*, with `overrides` (config fields) on top."""
    env = os.environ if environ is None else environ
    parsers = {"SEED": ("seed", int), "ALPHA": ("alpha", float), "SNAPSHOT_MINUTES": ("snapshot_minutes", int),
               "IV_PREMIUM": ("iv_premium", float)}
    values: dict[str, Any] = {}
    for suffix, (name, parse) in parsers.items():
        raw = env.get(SYNTHETIC_PREFIX + suffix)
        if raw is None or raw.strip() == "":
            continue
        try:
            values[name] = parse(raw)
        except ValueError as exc:
            raise ValueError(f"{SYNTHETIC_PREFIX}{suffix}={raw!r} is not a valid {parse.__name__}") from exc
    if symbols := _symbol_list(env.get(SYNTHETIC_PREFIX + "SYMBOLS")):
        values["symbols"] = symbols
    values.update(overrides)
    unknown = set(values) - {f.name for f in fields(SyntheticMarketConfig)}
    if unknown:
        known = sorted(f.name for f in fields(SyntheticMarketConfig))
        raise ValueError(f"unknown SyntheticMarketConfig fields {sorted(unknown)}; known: {known}")
    return replace(SyntheticMarketConfig(), **values)


@dataclass(frozen=True)
class SourceSettings:
    """Everything needed to build one market source. Secrets are kept out of the repr."""

    source: str = "synthetic"
    """synthetic | files | alpaca | ibkr."""
    symbols: tuple[str, ...] = ()
    """An explicit universe; empty: the source's own (see `universe`)."""
    broker_symbols: tuple[str, ...] = ()
    """PIPELINE_SYMBOLS: the brokers' universe when `symbols` is empty."""
    synthetic: SyntheticMarketConfig = field(default_factory=SyntheticMarketConfig)
    landing_dir: Path | None = None
    """Folder of landing/<table>/ files; None: <data lake>/landing."""
    alpaca_api_key: str | None = field(default=None, repr=False)
    alpaca_secret_key: str | None = field(default=None, repr=False)
    alpaca_url_override: str | None = None
    alpaca_retry_base_delay_s: float = 1.0
    alpaca_rate_limit_budget_s: float = 300.0
    """Seconds one Alpaca request may spend waiting out rate limits (HTTP 429) before the run fails."""
    ibkr_host: str = "127.0.0.1"
    ibkr_port: int = 7497
    ibkr_client_id: int = 17
    ibkr_connect_timeout_s: float = 10.0
    ibkr_market_data_type: int = 1
    """The IBKR option-chain collector's market data: 1 live (needs the subscription, e.g. OPRA), 3 delayed."""
    option_snapshot_minutes: int = DEFAULT_OPTION_SNAPSHOT_MINUTES
    """Minutes between a broker's option-chain snapshots: the live collector's interval and the Alpaca
    reconstruction's grid (PIPELINE_OPTION_SNAPSHOT_MINUTES). The synthetic market has its own."""

    def __post_init__(self) -> None:
        name = self.source.strip().lower()
        if name not in SOURCES:
            raise ValueError(
                f"unknown market source {self.source!r}; set {SOURCE_VAR} (or the resource's `source`) to one of "
                f"{', '.join(SOURCES)}"
            )
        object.__setattr__(self, "source", name)
        object.__setattr__(self, "symbols", tuple(self.symbols))
        check_option_snapshot_minutes(self.option_snapshot_minutes)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> SourceSettings:
        """Settings from the environment; `overrides` that are not None win. Synthetic overrides go by the
        config's field names with a `synthetic_` prefix (e.g. synthetic_seed=3)."""
        env = os.environ if environ is None else environ
        given = {k: v for k, v in overrides.items() if v is not None}
        synthetic = {k.removeprefix("synthetic_"): given.pop(k) for k in list(given) if k.startswith("synthetic_")}
        if given.get("symbols"):
            synthetic.setdefault("symbols", tuple(given["symbols"]))
        values: dict[str, Any] = {
            "source": env.get(SOURCE_VAR) or "synthetic",
            "option_snapshot_minutes": option_snapshot_minutes_from_env(env),
            "broker_symbols": _symbol_list(env.get(SYMBOLS_VAR)),
            "synthetic": synthetic_config_from_env(env, **synthetic),
        }
        values.update(given)
        if str(values["source"]).strip().lower() == "alpaca":  # credentials are read only for their source
            for name, var in ALPACA_KEY_VARS.items():
                values.setdefault(name, env.get(var) or None)
        return cls(**values)

    def universe(self) -> list[str]:
        """The symbols a source is asked for: `symbols` if set; all for files (landed files define their own
        universe, and filtering them would drop rows uncounted); the synthetic universe; PIPELINE_SYMBOLS for a
        broker, which has no universe of its own."""
        if self.symbols:
            return list(self.symbols)
        if self.source == "files":
            return []
        if self.source == "synthetic":
            return list(self.synthetic.symbols)
        if not self.broker_symbols:
            raise ValueError(
                f"source {self.source!r} needs a universe: set {SYMBOLS_VAR}=SPY,QQQ,... (comma-separated) or the "
                "market_data resource's `symbols` field"
            )
        return list(self.broker_symbols)

    def landing_path(self, lake_dir: Path) -> Path:
        """The folder of landing/<table>/ files the files source reads (and the landing sensor watches)."""
        return Path(self.landing_dir) if self.landing_dir else Path(lake_dir) / "landing"


def check_option_snapshot_minutes(minutes: int) -> int:
    """`minutes` if the collector's schedule can hit every slot: a divisor of 30, so the slots (every `minutes`
    from the 09:30 open) fall on the cron minutes */`minutes`."""
    if minutes < 1 or 30 % minutes:
        raise ValueError(
            f"option snapshot minutes must divide 30 (1, 2, 3, 5, 6, 10, 15 or 30) so every snapshot slot after the "
            f"09:30 open falls on a cron minute; got {minutes} (set {OPTION_MINUTES_VAR})"
        )
    return minutes


def option_snapshot_minutes_from_env(environ: Mapping[str, str] | None = None) -> int:
    """PIPELINE_OPTION_SNAPSHOT_MINUTES, else 15."""
    env = os.environ if environ is None else environ
    raw = (env.get(OPTION_MINUTES_VAR) or "").strip()
    if not raw:
        return DEFAULT_OPTION_SNAPSHOT_MINUTES
    try:
        return check_option_snapshot_minutes(int(raw))
    except ValueError as exc:
        raise ValueError(f"{OPTION_MINUTES_VAR}={raw!r}: {exc}") from None


def _secret(value: str | None, env_var: str) -> str:
    if not value:
        raise SourceAuthError(
            f"{env_var} is not set; export it (or set the resource field) to ingest from Alpaca, "
            f"or use {SOURCE_VAR}=synthetic for the embedded market"
        )
    return value


def build_market_source(settings: SourceSettings, lake_dir: Path | None = None) -> MarketSource:
    """A ready source; raises SourceAuthError naming the variable when a broker's credentials are missing.

    `lake_dir` locates the files source's landing folder (unless `settings.landing_dir` is set); the other sources
    do not need it. Each source's module is imported only when chosen, so the brokers' SDKs load only for them.
    """
    if settings.source == "synthetic":
        from pipeline.synthetic.source import SyntheticMarket

        return SyntheticMarket(settings.synthetic)
    if settings.source == "files":
        from pipeline.sources.file_source import FileSource

        if lake_dir is None and settings.landing_dir is None:
            raise ValueError("the files source reads <lake>/landing: pass the lake dir or set landing_dir")
        return FileSource(settings.landing_path(lake_dir or Path(".")))
    broker = _alpaca_source(settings) if settings.source == "alpaca" else _ibkr_source(settings)
    if lake_dir is None and settings.landing_dir is None:
        return broker
    # The live collector's snapshots of a day are the broker's real chains: they win over its answer for past days.
    from pipeline.sources.file_source import FileSource

    return CollectedChainsFirst(broker, FileSource(settings.landing_path(lake_dir or Path("."))))


def _alpaca_source(settings: SourceSettings) -> AlpacaSource:
    api_key = _secret(settings.alpaca_api_key, ALPACA_KEY_VARS["alpaca_api_key"])
    secret_key = _secret(settings.alpaca_secret_key, ALPACA_KEY_VARS["alpaca_secret_key"])
    from pipeline.sources.alpaca_source import AlpacaSource
    from pipeline.sources.retry import RetryPolicy

    return AlpacaSource(
        api_key=api_key,
        secret_key=secret_key,
        url_override=settings.alpaca_url_override,
        retry=RetryPolicy(base_delay_s=settings.alpaca_retry_base_delay_s,
                          rate_limit_budget_s=settings.alpaca_rate_limit_budget_s),
        snapshot_minutes=settings.option_snapshot_minutes,
    )


def _ibkr_source(settings: SourceSettings) -> MarketSource:
    from pipeline.sources.ibkr_source import IBKRSource

    return IBKRSource(
        host=settings.ibkr_host,
        port=settings.ibkr_port,
        client_id=settings.ibkr_client_id,
        connect_timeout_s=settings.ibkr_connect_timeout_s,
    )


def alpaca_vars_set(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Setting name -> variable of the Alpaca credentials that are set (for EnvVar wiring in Dagster)."""
    env = os.environ if environ is None else environ
    return {name: var for name, var in ALPACA_KEY_VARS.items() if env.get(var)}


def build_chain_source(settings: SourceSettings) -> ChainSource:
    """The live option-chain source of the collector for `settings.source` (alpaca or ibkr).

    The IBKR collector connects with client id `ibkr_client_id + 1`, so it can run beside an ingest run's connection
    (TWS refuses a second connection with the same id).
    """
    if settings.source not in BROKERS:
        raise ValueError(
            f"the option-chain collector reads a broker's live chain: choose one of {', '.join(BROKERS)} (the "
            f"collector's `broker`, or {SOURCE_VAR}), not {settings.source!r}"
        )
    if settings.source == "alpaca":
        return _alpaca_source(settings)
    from pipeline.sources.ibkr_options import IBKROptionChains

    return IBKROptionChains(
        host=settings.ibkr_host,
        port=settings.ibkr_port,
        client_id=settings.ibkr_client_id + 1,
        connect_timeout_s=settings.ibkr_connect_timeout_s,
        market_data_type=settings.ibkr_market_data_type,
    )
