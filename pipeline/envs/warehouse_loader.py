"""The one bridge from the warehouse to the envs, for any source (synthetic, files, Alpaca, IBKR).

`load_market_tensors` reads `features.market` for some trading days and symbols, with the quotes in force of
`features.bars_1m` (bar-only symbols, which have no quotes, trade at their close -+ a default half-spread and are
not `quoted`), into `MarketTensors`; `load_option_chain` reads `raw.option_snapshots` and `features.options` of one
underlying into `OptionChainTensors`. The agent's columns are catalog features chosen by name in the config. All
of it goes through `market_frames.frames_to_arrays` / `chain_tensors_from_snapshots`: filled forward only, an
unfilled value is 0 with a `<name>_missing` flag, NaN in a table is missing (flagged), and nothing at a bar comes
from a later row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

import polars as pl
import torch

from pipeline.contract.calendar import trading_session
from pipeline.envs.frames import (
    DEFAULT_HALF_SPREAD_BPS,
    TURBULENCE_COLUMN,
    frames_to_arrays,
    impute_quotes,
)
from pipeline.envs.option_slots import align_to_slots
from pipeline.envs.options_chain import OptionChainTensors, chain_tensors_from_snapshots
from pipeline.envs.tensors import MarketTensors
from pipeline.features.catalog import (
    BARS,
    DEFAULT_FEATURES,
    MARKET,
    OPTIONS,
    features_of,
    market_feature_names,
)
from pipeline.features.rows import bar_rows
from pipeline.lake import Warehouse

DEFAULT_OPTION_FEATURES: tuple[str, ...] = (
    "atm_iv", "skew_25d", "term_slope", "put_call_volume_ratio", "put_call_oi_ratio",
)
"""features.options columns the options agent sees by default: level, skew and term of the smile, and flow."""
_OPTION_KEYS = ("underlying", "ts", "trading_day")
TURBULENCE_COLUMNS = (TURBULENCE_COLUMN, "turbulence_index_daily")
_PRICE_COLUMNS = {"symbol": pl.Utf8, "ts": pl.Datetime("us", "UTC"), "trading_day": pl.Date,
                  "bid": pl.Float64, "ask": pl.Float64, "quoted": pl.Boolean}


def _chosen(names: Sequence[str], known: Sequence[str], table: str) -> tuple[str, ...]:
    names = tuple(names)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(
            f"unknown {table} features {unknown}: choose catalog names (docs/FEATURES.md), one of {list(known)}"
        )
    if not names or len(set(names)) != len(names):
        raise ValueError(f"choose at least one {table} feature, each once; got {list(names)}")
    return names


@dataclass(frozen=True)
class MarketLoaderConfig:
    """What `load_market_tensors` puts in front of the agent."""

    features: tuple[str, ...] = DEFAULT_FEATURES
    """features.market columns the agent observes, by catalog name; each gets a `<name>_missing` flag beside it."""
    half_spread_bps: float = DEFAULT_HALF_SPREAD_BPS
    """Half-spread of the quote imputed around the close of a bar-only symbol (it has no quotes)."""
    turbulence: str = TURBULENCE_COLUMN
    """The column that drives the envs' risk-off: the minute index (one-minute rows), or `turbulence_index_daily`
    on daily bars, where the minute index is null."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "features", _chosen(self.features, market_feature_names(), MARKET))
        if self.turbulence not in TURBULENCE_COLUMNS:
            raise ValueError(f"turbulence must be one of {TURBULENCE_COLUMNS}, got {self.turbulence!r}")
        if self.half_spread_bps < 0:
            raise ValueError(f"half_spread_bps must be >= 0, got {self.half_spread_bps}")


@dataclass(frozen=True)
class OptionLoaderConfig:
    """What `load_option_chain` reads of a chain."""

    expiries: int = 3
    """Expiries per day: the first ones on or after the day, listed at its first snapshot."""
    strikes: int = 9
    """Strikes per expiry: those nearest the underlying price at the day's first snapshot."""
    features: tuple[str, ...] = DEFAULT_OPTION_FEATURES
    """features.options columns beside the chain, by catalog name; each gets a `<name>_missing` flag."""
    slot_minutes: int | None = None
    """For chains gathered by the live collector: its interval. Each snapshot is put on the slot it was taken in,
    a missed slot stays empty (nothing quoted), and days start at their common first slot (see
    `option_slots.align_to_slots`). None: the rows' own snapshot times, the same number on every day (the
    synthetic market's and hand-landed chains)."""

    def __post_init__(self) -> None:
        known = [f.name for f in features_of(OPTIONS) if f.name not in _OPTION_KEYS]
        object.__setattr__(self, "features", _chosen(self.features, known, OPTIONS))


def _as_days(trading_days: Sequence[date | str]) -> list[date]:
    days = sorted({d if isinstance(d, date) else date.fromisoformat(d) for d in trading_days})
    if not days:
        raise ValueError("trading_days is empty: name the trading days to load")
    return days


def _require_days(frame: pl.DataFrame, days: list[date], table: str) -> None:
    missing = sorted(set(days) - set(frame["trading_day"].to_list()))
    if missing:
        raise ValueError(f"{table} has no rows for {[str(d) for d in missing]}: materialize those partitions first")


def _bar_only_prices(store: Warehouse, days: list[date], features: pl.DataFrame, quoted_symbols: pl.DataFrame,
                     half_spread_bps: float) -> pl.DataFrame:
    """Prices of the symbol-days without quotes: the close of each raw bar (stamped at its start, as the raw.bars
    contract says), keyed by its end as features.market keys it (`bar_rows`), -+ `half_spread_bps`."""
    keys = features.select("symbol", "ts", "trading_day", "bar_interval").join(
        quoted_symbols, on=["symbol", "trading_day"], how="anti"
    )
    if keys.is_empty():
        return pl.DataFrame(schema=_PRICE_COLUMNS)
    raw = store.read_partition("raw.bars", days)
    ends = bar_rows(raw, [trading_session(d) for d in days], bar_ts="start")
    rows = keys.join(ends.select("symbol", "ts", "trading_day", "bar_interval", "close"),
                     on=["symbol", "ts", "trading_day", "bar_interval"], how="left")
    return impute_quotes(rows, half_spread_bps).select(list(_PRICE_COLUMNS)).cast(_PRICE_COLUMNS)


def load_market_tensors(
    store: Warehouse,
    trading_days: Sequence[date | str],
    symbols: Sequence[str] | None = None,
    config: MarketLoaderConfig | None = None,
    device: torch.device | str = "cpu",
) -> MarketTensors:
    """MarketTensors of `symbols` (default: every symbol of features.market on those days) over `trading_days`.

    Bars are each day's distinct features.market timestamps (one-minute bars, coarser bars, or one daily bar);
    observation columns are `config.features` then their missing flags; the turbulence index drives risk-off.
    """
    cfg = config or MarketLoaderConfig()
    days = _as_days(trading_days)
    columns = list(dict.fromkeys(["symbol", "ts", "trading_day", "bar_interval", *cfg.features, cfg.turbulence]))
    features = store.read_partition(MARKET, days, columns)
    _require_days(features, days, MARKET)
    if symbols is not None:
        unknown = sorted(set(symbols) - set(features["symbol"].to_list()))
        if unknown:
            known = sorted(set(features["symbol"].to_list()))
            raise ValueError(f"{MARKET} has no rows for symbols {unknown} on these days; it has {known}")
        features = features.filter(pl.col("symbol").is_in(list(symbols)))
    quote_columns = ["symbol", "ts", "trading_day", "bid", "ask"]
    quotes = (
        store.read_partition(BARS, days, quote_columns) if store.table_exists(BARS)
        else pl.DataFrame(schema={c: _PRICE_COLUMNS[c] for c in quote_columns})  # a bar-only lake
    ).join(features.select("symbol").unique(), on="symbol")
    quoted_symbols = quotes.select("symbol", "trading_day").unique()
    prices = pl.concat([
        impute_quotes(quotes).select(list(_PRICE_COLUMNS)).cast(_PRICE_COLUMNS),
        _bar_only_prices(store, days, features, quoted_symbols, cfg.half_spread_bps),
    ])
    arrays = frames_to_arrays(prices, features, cfg.features, symbols=symbols, turbulence_column=cfg.turbulence)
    return MarketTensors.from_arrays(**arrays, device=device)


def load_option_chain(
    store: Warehouse,
    trading_days: Sequence[date | str],
    underlying: str,
    config: OptionLoaderConfig | None = None,
) -> OptionChainTensors:
    """OptionChainTensors of one underlying over `trading_days`, with `config.features` of features.options."""
    cfg = config or OptionLoaderConfig()
    days = _as_days(trading_days)
    snapshots = store.read_partition("raw.option_snapshots", days)
    chain = snapshots.filter(pl.col("underlying") == underlying)
    if chain.is_empty():
        known = sorted(set(snapshots["underlying"].to_list()))
        raise ValueError(f"raw.option_snapshots has no rows of {underlying!r} on these days; it has {known}")
    _require_days(chain, days, "raw.option_snapshots")
    quoted = chain.filter(pl.col("bid").is_not_null() & pl.col("ask").is_not_null())["trading_day"].unique()
    unquoted = sorted(set(days) - set(quoted.to_list()))
    if unquoted:
        raise ValueError(
            f"{underlying} has no quoted option on {[d.isoformat() for d in unquoted]}: the options env could open "
            "nothing there. A chain reconstructed from bars (Alpaca history, `reconstructed` true) has no bid or ask; "
            "collect live chains for those days (the option_chain_collector schedule) or leave them out."
        )
    features = store.read_partition(OPTIONS, days, [*_OPTION_KEYS, *cfg.features]).filter(
        pl.col("underlying") == underlying
    )
    times = None
    if cfg.slot_minutes is not None:
        chain, features, times = align_to_slots(chain, features, cfg.slot_minutes)
    return chain_tensors_from_snapshots(chain, cfg.expiries, cfg.strikes, features, cfg.features, times)
