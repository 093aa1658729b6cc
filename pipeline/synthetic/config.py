"""Parameters of the embedded synthetic market, and the per-symbol constants derived from (seed, symbol).

Everything random in the synthetic market is drawn from a numpy Generator seeded by a hash of the keys it
depends on (`stream`), never from a shared global stream, so a symbol's data depends only on (seed, symbol,
trading_day) and the parameters below: not on the rest of the universe, nor on which other days were generated.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from pipeline.contract.calendar import REGULAR_SESSION_MINUTES, TRADING_DAYS_PER_YEAR

DEFAULT_SYMBOLS: tuple[str, ...] = ("SYMA", "SYMB", "SYMC", "SYMD", "SYME")
MINUTES_PER_YEAR = TRADING_DAYS_PER_YEAR * REGULAR_SESSION_MINUTES
TICK = 0.01


@dataclass(frozen=True)
class SyntheticMarketConfig:
    """Knobs of the synthetic market. Defaults give a liquid 5-name universe with a learnable momentum edge."""

    seed: int = 7
    """Root seed: every random draw is keyed by (seed, symbol, trading_day, purpose)."""
    symbols: tuple[str, ...] = DEFAULT_SYMBOLS
    """Default universe (used when a caller passes no symbols). Per-symbol constants come from (seed, symbol)."""
    alpha: float = 0.15
    """Planted signal strength: E[r(t+1) | past] = alpha / sqrt(k) * (sum of the last k minute log returns),
    k = signal_minutes. 0 makes log prices a martingale (the negative control). Must be in [0, 1/sqrt(k))."""
    signal_minutes: int = 10
    """k: look-back of the planted momentum signal, in minutes."""
    snapshot_minutes: int = 15
    """Minutes between option-chain snapshots (first at open + snapshot_minutes, last at or before the close)."""
    vol_of_vol: float = 0.35
    """Stationary std of the log-volatility process (an hourly mean-reverting OU, half common, half own)."""
    vol_regime_dispersion: float = 0.25
    """Std of the day's log-volatility regime, shared by all symbols of a day."""
    jump_probability: float = 2.0 / 390
    """Chance per minute of a jump, separately in the common factor and in each symbol's own noise."""
    jump_scale: float = 4.0
    """Jump size std, in units of the minute's diffusive volatility."""
    spread_vol_ratio: float = 0.12
    """Half-spread as a fraction of the minute volatility (in price); at least one tick wide in total."""
    trades_per_minute: float = 40.0
    """Average trades per symbol-minute over a regular session (each symbol scales it by 0.6-1.4)."""
    order_flow_sensitivity: float = 1.0
    """How strongly the buy/sell sign of trades follows the minute's return: P(buy) = logistic(this * z)."""
    option_expiry_days: tuple[int, ...] = (0, 7, 14, 30, 60, 90)
    """Target calendar days to expiry of the listed chains (each rolled to the next Friday; 0 = a same-day expiry,
    as the daily options of index ETFs)."""
    strikes_per_expiry: int = 15
    """Strikes per expiry, centred on spot, spaced by a price-dependent increment."""
    iv_premium: float = 0.04
    """Volatility risk premium: vol points (0.04 = 4) that the ATM implied vol of every expiry carries above the
    volatility that follows (annualized on trading time). 0 prices options fairly (the options negative control)."""
    risk_free_rate: float = 0.04
    """Continuously compounded annual rate for Black-Scholes."""

    def __post_init__(self) -> None:
        # Tuples keep the config hashable (generated days are cached per config) even if lists were passed.
        object.__setattr__(self, "symbols", tuple(self.symbols))
        object.__setattr__(self, "option_expiry_days", tuple(self.option_expiry_days))
        if not self.symbols:
            raise ValueError("SyntheticMarketConfig.symbols is empty; give at least one ticker, e.g. ('SYMA',)")
        limit = 1.0 / math.sqrt(self.signal_minutes)
        if not 0.0 <= self.alpha < limit:
            raise ValueError(
                f"alpha={self.alpha} is outside [0, {limit:.3f}): with signal_minutes={self.signal_minutes} a "
                "larger alpha makes prices explode; lower alpha or signal_minutes"
            )
        if not 0.0 <= self.iv_premium < 1.0:
            raise ValueError(f"iv_premium={self.iv_premium} must be in [0, 1): vol points as a fraction (0.04 = 4)")
        if self.snapshot_minutes < 1:
            raise ValueError(f"snapshot_minutes={self.snapshot_minutes} must be a positive number of minutes")

    @property
    def ar_coefficient(self) -> float:
        """The weight a = alpha / sqrt(k) of each of the last k minute log returns in the next expected return."""
        return self.alpha / math.sqrt(self.signal_minutes)


def stream(seed: int, *keys: object) -> np.random.Generator:
    """A Generator keyed by a stable hash of (seed, *keys): same keys, same draws, in any process."""
    digest = hashlib.blake2b(repr((int(seed), *map(str, keys))).encode(), digest_size=16).digest()
    return np.random.Generator(np.random.PCG64(int.from_bytes(digest, "little")))


@dataclass(frozen=True)
class SymbolProfile:
    """Constants of one symbol, drawn once from (seed, symbol)."""

    base_price: float
    annual_vol: float
    factor_loading: float
    trade_rate: float
    level_phases: tuple[float, ...]


# Periods (trading days) of the slow waves that move a symbol's opening price from day to day.
LEVEL_PERIODS = (23.0, 71.0, 173.0, 419.0)


@lru_cache(maxsize=4096)
def symbol_profile(seed: int, symbol: str, trades_per_minute: float) -> SymbolProfile:
    """The symbol's base price (40-400), annual vol (18-45%), factor loading (0.45-0.75) and trade rate."""
    rng = stream(seed, "profile", symbol)
    base_price = float(np.exp(rng.uniform(np.log(40.0), np.log(400.0))))
    return SymbolProfile(
        base_price=round(base_price, 2),
        annual_vol=float(rng.uniform(0.18, 0.45)),
        factor_loading=float(rng.uniform(0.45, 0.75)),
        trade_rate=float(trades_per_minute * rng.uniform(0.6, 1.4)),
        level_phases=tuple(float(p) for p in rng.uniform(0.0, 2 * np.pi, size=len(LEVEL_PERIODS))),
    )
