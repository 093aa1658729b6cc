"""The numpy synthetic market: SyntheticMarket's persistent momentum signal and volatility-driven spread, no polars.

It feeds the GPU path and the benchmarks, where polars is absent. The model is the one of
docs/SYNTHETIC_MARKET.md, reduced to what the batched envs need (quotes, high/low, volume per bar):

    r(t)     = a * (r(t-1) + ... + r(t-k)) + sigma(t) * w(t)        a = alpha / sqrt(k), k = 10
    w(t)     = beta_i * f(t) + sqrt(1 - beta_i^2) * e_i(t)            f common to all symbols of a day
    sigma(t) = vol_i / sqrt(252*390) * (1 - a*k) * regime(day) * u(t)
    spread   = max(1 tick, round(2 * 0.12 * sigma(t) * mid / $0.01)) ticks, bid on the cent grid, ask = bid + spread

so E[r(t+1) | past] = a * (log mid(t) - log mid(t-k)): a signal that persists for about k bars and can be
traded with next-bar fills. `alpha = 0` makes log mids a martingale; the spread alone then makes every
strategy lose. A hidden burn-in before the open makes the momentum state stationary at bar 0.
"""

from __future__ import annotations

import math

import numpy as np

from pipeline.synthetic.config import MINUTES_PER_YEAR, TICK, SyntheticMarketConfig

_DEFAULTS = SyntheticMarketConfig()
SIGNAL_MINUTES = _DEFAULTS.signal_minutes
SPREAD_VOL_RATIO = _DEFAULTS.spread_vol_ratio
BURN_IN_MINUTES = 60
REGIME_DISPERSION = _DEFAULTS.vol_regime_dispersion


def intraday_vol_profile(minutes: int) -> np.ndarray:
    """u(t) = 1 + exp(-m/20) + 0.5 exp(-(M-m)/20) at minute midpoints, normalized to mean square 1."""
    m = np.arange(minutes) + 0.5
    u = 1.0 + np.exp(-m / 20.0) + 0.5 * np.exp(-(minutes - m) / 20.0)
    return u / math.sqrt(float(np.mean(u**2)))


def momentum_filter(eps: np.ndarray, coefficient: float, lags: int) -> np.ndarray:
    """r(t) = coefficient * (r(t-1) + ... + r(t-lags)) + eps(t) along axis 1, from zeros.

    The recursion runs over time (axis 1) only; each step is one vectorized update of every (day, symbol).
    """
    if coefficient == 0.0:
        return eps.copy()
    out = np.empty_like(eps)
    window = np.zeros_like(eps[:, 0])
    for t in range(eps.shape[1]):
        out[:, t] = coefficient * window + eps[:, t]
        window += out[:, t] - (out[:, t - lags] if t >= lags else 0.0)
    return out


def random_walk_arrays(
    days: int,
    minutes: int,
    n_symbols: int,
    alpha: float,
    seed: int,
    signal_minutes: int = SIGNAL_MINUTES,
) -> dict[str, np.ndarray]:
    """[days, minutes, symbols] bid, ask, high, low and volume of the numpy synthetic market (module docstring).

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
    regime = np.exp(REGIME_DISPERSION * rng.standard_normal((days, 1, 1)) - REGIME_DISPERSION**2 / 2)
    profile = intraday_vol_profile(minutes)
    u = np.concatenate([np.full(BURN_IN_MINUTES, profile[0]), profile])  # the burn-in runs at the opening vol
    # (1 - a*k) undoes the momentum's low-frequency amplification, so daily vol stays near vol_i for any alpha.
    sigma = annual_vol / math.sqrt(MINUTES_PER_YEAR) * (1.0 - a * k) * regime * u[None, :, None]
    factor = rng.standard_normal((days, steps, 1))
    w = beta * factor + np.sqrt(1.0 - beta**2) * rng.standard_normal((days, steps, n_symbols))
    ret = momentum_filter(sigma * w, a, k)[:, BURN_IN_MINUTES:]
    sigma = sigma[:, BURN_IN_MINUTES:]
    open_mid = base_price * np.exp(0.05 * rng.standard_normal((days, 1, n_symbols)))
    mid = open_mid * np.exp(np.cumsum(ret, axis=1))
    spread_ticks = np.maximum(1.0, np.rint(2.0 * SPREAD_VOL_RATIO * sigma * mid / TICK))
    bid = np.rint(mid / TICK - spread_ticks / 2.0) * TICK
    ask = bid + spread_ticks * TICK
    wiggle = np.abs(rng.standard_normal((2, *ret.shape))) * sigma * 0.7
    return {
        "bid": bid,
        "ask": ask,
        "high": mid * np.exp(wiggle[0]),
        "low": mid * np.exp(-wiggle[1]),
        "volume": rng.lognormal(np.log(2000.0 * profile)[None, :, None], 0.5, ret.shape).round(),
    }

