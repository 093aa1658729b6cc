"""Black-Scholes prices, greeks and implied volatility for European options (vectorized numpy).

Conventions (those of broker feeds such as IBKR): `t` in years, `vol` and `rate` annualized and continuously
compounded, no dividends. Delta and gamma per $1 of the underlying; theta is the price change per calendar day
(negative for a long option); vega is the price change per 1 vol point (0.01 of `vol`).
"""

from __future__ import annotations

import math

import numpy as np

ArrayLike = np.ndarray | float
_erf = np.frompyfunc(math.erf, 1, 1)
SQRT_2PI = math.sqrt(2 * math.pi)
DAYS_PER_YEAR = 365.0


def norm_cdf(x: ArrayLike) -> np.ndarray:
    """Standard normal CDF (exact, through math.erf)."""
    return 0.5 * (1.0 + np.asarray(_erf(np.asarray(x, dtype=np.float64) / math.sqrt(2)), dtype=np.float64))


def norm_pdf(x: ArrayLike) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return np.exp(-0.5 * x * x) / SQRT_2PI


def _d1_d2(
    spot: ArrayLike, strike: ArrayLike, t: ArrayLike, rate: float, vol: ArrayLike
) -> tuple[np.ndarray, np.ndarray]:
    spot, strike, t, vol = (np.asarray(a, dtype=np.float64) for a in (spot, strike, t, vol))
    if np.any(t <= 0) or np.any(vol <= 0) or np.any(spot <= 0) or np.any(strike <= 0):
        raise ValueError("Black-Scholes needs spot, strike, time to expiry and vol all > 0; drop expired contracts")
    root_t = np.sqrt(t)
    d1 = (np.log(spot / strike) + (rate + 0.5 * vol * vol) * t) / (vol * root_t)
    return d1, d1 - vol * root_t


def bs_price(
    spot: ArrayLike,
    strike: ArrayLike,
    t: ArrayLike,
    rate: float,
    vol: ArrayLike,
    is_call: np.ndarray | bool,
) -> np.ndarray:
    """Option value; `is_call` False gives the put."""
    d1, d2 = _d1_d2(spot, strike, t, rate, vol)
    discount = np.exp(-rate * np.asarray(t, dtype=np.float64))
    call = spot * norm_cdf(d1) - strike * discount * norm_cdf(d2)
    put = strike * discount * norm_cdf(-d2) - spot * norm_cdf(-d1)
    return np.where(is_call, call, put)


def bs_greeks(
    spot: ArrayLike,
    strike: ArrayLike,
    t: ArrayLike,
    rate: float,
    vol: ArrayLike,
    is_call: np.ndarray | bool,
) -> dict[str, np.ndarray]:
    """delta, gamma, theta (per calendar day) and vega (per vol point) in the module's conventions."""
    d1, d2 = _d1_d2(spot, strike, t, rate, vol)
    spot, strike, t, vol = (np.asarray(a, dtype=np.float64) for a in (spot, strike, t, vol))
    root_t = np.sqrt(t)
    discount = np.exp(-rate * t)
    pdf = norm_pdf(d1)
    delta = np.where(is_call, norm_cdf(d1), norm_cdf(d1) - 1.0)
    gamma = pdf / (spot * vol * root_t)
    decay = -spot * pdf * vol / (2 * root_t)
    theta_call = decay - rate * strike * discount * norm_cdf(d2)
    theta_put = decay + rate * strike * discount * norm_cdf(-d2)
    theta = np.where(is_call, theta_call, theta_put) / DAYS_PER_YEAR
    vega = spot * pdf * root_t / 100.0
    return {"delta": delta, "gamma": gamma, "theta": theta, "vega": vega}


def implied_vol(
    price: ArrayLike,
    spot: ArrayLike,
    strike: ArrayLike,
    t: ArrayLike,
    rate: float,
    is_call: np.ndarray | bool,
    iterations: int = 60,
) -> np.ndarray:
    """The vol that reprices `price` (bisection on [1e-4, 5]); NaN where the price is outside no-arbitrage bounds."""
    price = np.asarray(price, dtype=np.float64)
    shape = np.broadcast(price, spot, strike, t, is_call).shape
    low, high = np.full(shape, 1e-4), np.full(shape, 5.0)
    for _ in range(iterations):
        mid = 0.5 * (low + high)
        too_high = bs_price(spot, strike, t, rate, mid, is_call) > price
        high, low = np.where(too_high, mid, high), np.where(too_high, low, mid)
    vol = 0.5 * (low + high)
    lo_price = bs_price(spot, strike, t, rate, np.full(shape, 1e-4), is_call)
    hi_price = bs_price(spot, strike, t, rate, np.full(shape, 5.0), is_call)
    return np.where((price < lo_price - 1e-9) | (price > hi_price + 1e-9), np.nan, vol)
