"""The synthetic market as [days, minutes, symbols] arrays, every day and symbol drawn at once.

The model of `pipeline.synthetic.paths` (docs/SYNTHETIC_MARKET.md) reduced to what the batched envs and the
benchmarks need (quotes, high/low and volume per bar), without jumps, the log-volatility process or trades, and
built from the same pieces (`momentum_filter`, `vol_profile`, `spread_ticks`, `quote_cents`, the burn-in):

    r(t)     = a * (r(t-1) + ... + r(t-k)) + sigma(t) * w(t)        a = alpha / sqrt(k), k = 10
    w(t)     = beta_i * f(t) + sqrt(1 - beta_i^2) * e_i(t)            f common to all symbols of a day
    sigma(t) = vol_i / sqrt(252*390) * (1 - a*k) * regime(day) * u(t)
    spread   = max(1 tick, round(2 * 0.12 * sigma(t) * mid / $0.01)) ticks, bid on the cent grid, ask = bid + spread

so E[r(t+1) | past] = a * (log mid(t) - log mid(t-k)): a signal that persists for about k bars and can be
traded with next-bar fills. `alpha = 0` makes log mids a martingale; the spread alone then makes every
strategy lose. Draws come from one Generator seeded by `seed`, so the arrays are not the embedded market's days.
"""

from __future__ import annotations

import math

import numpy as np

from pipeline.synthetic.config import MINUTES_PER_YEAR, TICK, SyntheticMarketConfig
from pipeline.synthetic.paths import BURN_IN_MINUTES, momentum_filter, quote_cents, spread_ticks, vol_profile

_DEFAULTS = SyntheticMarketConfig()
SIGNAL_MINUTES = _DEFAULTS.signal_minutes
"""k: the look-back of the planted momentum signal, in minutes (the synthetic market's default)."""


def random_walk_arrays(
    days: int,
    minutes: int,
    n_symbols: int,
    alpha: float,
    seed: int,
    signal_minutes: int = SIGNAL_MINUTES,
) -> dict[str, np.ndarray]:
    """[days, minutes, symbols] bid, ask, high, low and volume of the reduced market (module docstring).

    Each day starts from its own price level (no overnight link), so days are independent episodes.
    """
    k = int(signal_minutes)
    if not 0.0 <= alpha < 1.0 / math.sqrt(k):
        raise ValueError(
            f"alpha must be in [0, 1/sqrt({k}) = {1 / math.sqrt(k):.3f}); got {alpha}. "
            "Larger values make the momentum explosive: lower alpha or signal_minutes"
        )
    rng = np.random.default_rng(seed)
    a = alpha / math.sqrt(k)
    steps = BURN_IN_MINUTES + minutes
    base_price = np.exp(rng.uniform(np.log(40.0), np.log(400.0), n_symbols))
    annual_vol = rng.uniform(0.18, 0.45, n_symbols)
    beta = rng.uniform(0.45, 0.75, n_symbols)
    dispersion = _DEFAULTS.vol_regime_dispersion
    regime = np.exp(dispersion * rng.standard_normal((days, 1, 1)) - dispersion**2 / 2)
    profile = vol_profile(minutes, normalized_over=minutes)
    u = np.concatenate([np.full(BURN_IN_MINUTES, profile[0]), profile])  # the burn-in runs at the opening vol
    # (1 - a*k) undoes the momentum's low-frequency amplification, so daily vol stays near vol_i for any alpha.
    sigma = annual_vol / math.sqrt(MINUTES_PER_YEAR) * (1.0 - a * k) * regime * u[None, :, None]
    factor = rng.standard_normal((days, steps, 1))
    w = beta * factor + np.sqrt(1.0 - beta**2) * rng.standard_normal((days, steps, n_symbols))
    ret = momentum_filter(sigma * w, a, k, axis=1)[:, BURN_IN_MINUTES:]
    sigma = sigma[:, BURN_IN_MINUTES:]
    open_mid = base_price * np.exp(0.05 * rng.standard_normal((days, 1, n_symbols)))
    mid = open_mid * np.exp(np.cumsum(ret, axis=1))
    spread = spread_ticks(sigma, mid, _DEFAULTS.spread_vol_ratio)
    bid = quote_cents(mid, spread)[0] * TICK
    ask = bid + spread * TICK
    wiggle = np.abs(rng.standard_normal((2, *ret.shape))) * sigma * 0.7
    return {
        "bid": bid,
        "ask": ask,
        "high": mid * np.exp(wiggle[0]),
        "low": mid * np.exp(-wiggle[1]),
        "volume": rng.lognormal(np.log(2000.0 * profile)[None, :, None], 0.5, ret.shape).round(),
    }
