"""Black-Scholes prices, greeks and implied volatility for European options, written once for numpy and torch.

Conventions (those of broker feeds such as IBKR): `t` in years, `vol` and `rate` annualized and continuously
compounded, no dividends. Delta and gamma per $1 of the underlying; theta is the price change per calendar day
(negative for a long option); vega is the price change per 1 vol point (0.01 of `vol`).

The formulas (`d1_d2`, `option_values`, `option_greeks`) take the few elementwise functions they need as an
`ArrayMath`: `NUMPY_MATH` here (`bs_price`, `bs_greeks`, `implied_vol`: the synthetic market, the brokers' fills),
torch's in `pipeline.envs.options_chain`, which prices whole chains on the env's device. Arithmetic is the arrays'
own, so one definition serves both and no twin has to be held equal.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

ArrayLike = np.ndarray | float
_erf = np.frompyfunc(math.erf, 1, 1)
SQRT_2PI = math.sqrt(2 * math.pi)
DAYS_PER_YEAR = 365.0


def norm_cdf(x: ArrayLike) -> np.ndarray:
    """Standard normal CDF (exact, through math.erf)."""
    return 0.5 * (1.0 + np.asarray(_erf(np.asarray(x, dtype=np.float64) / math.sqrt(2)), dtype=np.float64))


class ArrayMath(NamedTuple):
    """The elementwise functions of one array library that the formulas call."""

    exp: Callable[[Any], Any]
    log: Callable[[Any], Any]
    sqrt: Callable[[Any], Any]
    ndtr: Callable[[Any], Any]
    """The standard normal CDF."""


NUMPY_MATH = ArrayMath(exp=np.exp, log=np.log, sqrt=np.sqrt, ndtr=norm_cdf)


def d1_d2(spot: Any, strike: Any, t: Any, rate: float, vol: Any, xp: ArrayMath = NUMPY_MATH) -> tuple[Any, Any]:
    """(d1, d2) on arrays of `xp`'s library; no check of the inputs (the callers decide what expired means)."""
    root_t = xp.sqrt(t)
    d1 = (xp.log(spot / strike) + (rate + 0.5 * vol * vol) * t) / (vol * root_t)
    return d1, d1 - vol * root_t


def option_values(spot: Any, strike: Any, t: Any, rate: float, vol: Any,
                  xp: ArrayMath = NUMPY_MATH) -> tuple[Any, Any]:
    """(call, put) values."""
    d1, d2 = d1_d2(spot, strike, t, rate, vol, xp)
    discount = xp.exp(-rate * t)
    call = spot * xp.ndtr(d1) - strike * discount * xp.ndtr(d2)
    put = strike * discount * xp.ndtr(-d2) - spot * xp.ndtr(-d1)
    return call, put


def option_greeks(spot: Any, strike: Any, t: Any, rate: float, vol: Any, xp: ArrayMath = NUMPY_MATH) -> dict[str, Any]:
    """call_delta, put_delta, gamma (per $1), vega (per 1.0 of vol), call_theta and put_theta (per year)."""
    d1, d2 = d1_d2(spot, strike, t, rate, vol, xp)
    root_t = xp.sqrt(t)
    discount = xp.exp(-rate * t)
    pdf = xp.exp(-0.5 * d1 * d1) / SQRT_2PI
    call_delta = xp.ndtr(d1)
    decay = -spot * pdf * vol / (2 * root_t)
    return {
        "call_delta": call_delta,
        "put_delta": call_delta - 1.0,
        "gamma": pdf / (spot * vol * root_t),
        "vega": spot * pdf * root_t,
        "call_theta": decay - rate * strike * discount * xp.ndtr(d2),
        "put_theta": decay + rate * strike * discount * xp.ndtr(-d2),
    }


def _checked(spot: ArrayLike, strike: ArrayLike, t: ArrayLike, vol: ArrayLike) -> tuple[np.ndarray, ...]:
    spot, strike, t, vol = (np.asarray(a, dtype=np.float64) for a in (spot, strike, t, vol))
    if np.any(t <= 0) or np.any(vol <= 0) or np.any(spot <= 0) or np.any(strike <= 0):
        raise ValueError("Black-Scholes needs spot, strike, time to expiry and vol all > 0; drop expired contracts")
    return spot, strike, t, vol


def bs_price(
    spot: ArrayLike,
    strike: ArrayLike,
    t: ArrayLike,
    rate: float,
    vol: ArrayLike,
    is_call: np.ndarray | bool,
) -> np.ndarray:
    """Option value; `is_call` False gives the put."""
    spot, strike, t, vol = _checked(spot, strike, t, vol)
    call, put = option_values(spot, strike, t, rate, vol)
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
    spot, strike, t, vol = _checked(spot, strike, t, vol)
    greeks = option_greeks(spot, strike, t, rate, vol)
    return {
        "delta": np.where(is_call, greeks["call_delta"], greeks["put_delta"]),
        "gamma": greeks["gamma"],
        "theta": np.where(is_call, greeks["call_theta"], greeks["put_theta"]) / DAYS_PER_YEAR,
        "vega": greeks["vega"] / 100.0,
    }


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
