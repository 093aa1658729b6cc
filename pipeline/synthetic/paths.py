"""The truth path of one symbol-day of the synthetic market: minute mids, quotes, and every trade's price and size.

Model (docs/SYNTHETIC_MARKET.md): minute log returns r(t) = a * (r(t-1) + ... + r(t-k)) + sigma(t) * w(t), where
w mixes a common factor (drawn from (seed, day)) and the symbol's own noise, both with Poisson jumps, and sigma(t)
is the symbol's volatility times the day's regime, a U-shaped intraday profile and a mean-reverting log-vol
process. A hidden burn-in before the open makes the momentum state stationary at the open. Trades are generated
per minute here (cheap, vectorized) so that minute bars and tick frames agree exactly on OHLC, volume and quotes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date
from functools import lru_cache

import numpy as np

from pipeline.contract.calendar import REGULAR_SESSION_MINUTES, TradingSession
from pipeline.synthetic.config import (
    LEVEL_PERIODS,
    MINUTES_PER_YEAR,
    TICK,
    SyntheticMarketConfig,
    stream,
    symbol_profile,
)

BURN_IN_MINUTES = 60
VOL_HALF_LIFE_MINUTES = 45.0
# How far the opening price wanders from the base price across days (std of log level).
LEVEL_DISPERSION = 0.15
US_PER_MINUTE = 60_000_000
CENTS_PER_DOLLAR = round(1 / TICK)


def _u_shape(minutes: int, open_amp: float, close_amp: float, scale: float) -> np.ndarray:
    """1 + open_amp*exp(-m/scale) + close_amp*exp(-(minutes-m)/scale), at minute midpoints."""
    m = np.arange(minutes) + 0.5
    return 1.0 + open_amp * np.exp(-m / scale) + close_amp * np.exp(-(minutes - m) / scale)


def vol_profile(minutes: int, normalized_over: int = REGULAR_SESSION_MINUTES) -> np.ndarray:
    """Intraday volatility multiplier u(m) = 1 + exp(-m/20) + 0.5 exp(-(minutes-m)/20) at minute midpoints,
    scaled so its mean square over a session of `normalized_over` minutes is 1 (a regular one by default; the
    arrays of `pipeline.synthetic.arrays` normalize over their own length)."""
    norm = math.sqrt(float(np.mean(_u_shape(normalized_over, 1.0, 0.5, 20.0) ** 2)))
    return _u_shape(minutes, 1.0, 0.5, 20.0) / norm


def activity_profile(minutes: int) -> np.ndarray:
    """Intraday trade-intensity multiplier (busier at the open and close); mean 1 over a regular session."""
    norm = float(np.mean(_u_shape(REGULAR_SESSION_MINUTES, 1.5, 1.0, 25.0)))
    return _u_shape(minutes, 1.5, 1.0, 25.0) / norm


def ou_path(shocks: np.ndarray, start: float, std: float, half_life: float) -> np.ndarray:
    """A stationary AR(1) with the given std, started at `start` (already in units of std), vectorized."""
    phi = 0.5 ** (1.0 / half_life)
    eta = math.sqrt(1.0 - phi * phi) * std * shocks
    t = np.arange(len(shocks))
    # h(t) = phi^(t+1) h(-1) + sum_{s<=t} phi^(t-s) eta(s); phi^-T stays small for a day of minutes.
    return phi ** (t + 1) * (std * start) + phi**t * np.cumsum(eta * phi ** (-t.astype(float)))


def momentum_filter(eps: np.ndarray, coefficient: float, lags: int, axis: int = 0) -> np.ndarray:
    """r(t) = coefficient * (r(t-1) + ... + r(t-lags)) + eps(t) along `axis` (time), starting from zeros.

    The recursion runs over time only; each step updates every other index at once. A single path steps through
    Python floats, which is many times faster than numpy's per-element scalars.
    """
    if coefficient == 0.0:
        return eps.copy()
    steps = eps.tolist() if eps.ndim == 1 else list(np.moveaxis(eps, axis, 0))
    out = []
    window = 0.0
    for t, e in enumerate(steps):
        r = coefficient * window + e
        out.append(r)
        window = window + (r - (out[t - lags] if t >= lags else 0.0))
    return np.asarray(out) if eps.ndim == 1 else np.moveaxis(np.stack(out), 0, axis)


@dataclass(frozen=True)
class MarketDay:
    """The draws shared by every symbol on one day: vol regime, common factor (with jumps), common log-vol."""

    regime: float
    factor: np.ndarray
    common_logvol: np.ndarray


@lru_cache(maxsize=64)
def market_day(config: SyntheticMarketConfig, day: date, minutes: int) -> MarketDay:
    rng = stream(config.seed, "market", day.isoformat())
    steps = BURN_IN_MINUTES + minutes
    s = config.vol_regime_dispersion
    regime = math.exp(s * rng.standard_normal() - s * s / 2)
    factor = rng.standard_normal(steps)
    jumps = (rng.random(steps) < config.jump_probability) * config.jump_scale * rng.standard_normal(steps)
    logvol = ou_path(rng.standard_normal(steps), rng.standard_normal(), config.vol_of_vol, VOL_HALF_LIFE_MINUTES)
    return MarketDay(regime=regime, factor=factor + jumps, common_logvol=logvol)


def opening_price(config: SyntheticMarketConfig, symbol: str, day: date) -> float:
    """A smooth function of the day (a few slow waves), so consecutive days open at nearby prices."""
    profile = symbol_profile(config.seed, symbol, config.trades_per_minute)
    waves = sum(
        math.sin(2 * math.pi * day.toordinal() / period + phase)
        for period, phase in zip(LEVEL_PERIODS, profile.level_phases, strict=True)
    )
    return profile.base_price * math.exp(LEVEL_DISPERSION * waves / math.sqrt(len(LEVEL_PERIODS) / 2))


def spread_ticks(sigma: np.ndarray, mid: np.ndarray, spread_vol_ratio: float) -> np.ndarray:
    """Quoted spread in ticks: 2 * spread_vol_ratio * sigma * mid in dollars, rounded, at least one tick."""
    return np.maximum(1, np.rint(2 * spread_vol_ratio * sigma * mid / TICK)).astype(np.int64)


def quote_cents(mid: np.ndarray, spread_ticks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bid and ask in cents around a mid, `spread_ticks` apart (so bid < ask always)."""
    bid = np.rint(mid * CENTS_PER_DOLLAR - spread_ticks / 2).astype(np.int64)
    return bid, bid + spread_ticks


@dataclass(frozen=True)
class SymbolDay:
    """One symbol's day. Minute arrays have one entry per bar; trade arrays one per trade (sorted by time)."""

    symbol: str
    session: TradingSession
    open_mid: float
    open_bid_cents: int
    open_ask_cents: int
    mid: np.ndarray  # mid at each bar's end (unrounded truth)
    log_return: np.ndarray  # log(mid(t) / mid(t-1)), mid(-1) = open_mid
    sigma: np.ndarray  # the minute's diffusive volatility (log-return std)
    bid_cents: np.ndarray  # quote at each bar's end
    ask_cents: np.ndarray
    trade_counts: np.ndarray  # trades per minute (>= 1)
    trade_minute: np.ndarray
    trade_offset_us: np.ndarray  # microseconds after the bar's start, in (0, 60e6)
    trade_price_cents: np.ndarray
    trade_size: np.ndarray
    trade_is_buy: np.ndarray
    trade_bid_cents: np.ndarray  # the quote each trade executed against
    trade_ask_cents: np.ndarray

    @property
    def minutes(self) -> int:
        return len(self.mid)

    @property
    def bar_starts(self) -> np.ndarray:
        """Index of each minute's first trade in the trade arrays."""
        return np.cumsum(self.trade_counts) - self.trade_counts


# About 1 MB per symbol-day: enough for bars, ticks and options of a few days, bounded for long backfills.
@lru_cache(maxsize=32)
def symbol_day(config: SyntheticMarketConfig, symbol: str, session: TradingSession) -> SymbolDay:
    """Generate (or fetch from cache) one symbol-day; pure function of (config, symbol, session)."""
    day, minutes = session.trading_day, session.minutes
    if minutes <= 0:
        raise ValueError(f"session {session} has no minutes; pass a session from trading_session(day)")
    profile = symbol_profile(config.seed, symbol, config.trades_per_minute)
    common = market_day(config, day, minutes)
    rng = stream(config.seed, "path", symbol, day.isoformat())
    steps = BURN_IN_MINUTES + minutes

    own = rng.standard_normal(steps)
    own += (rng.random(steps) < config.jump_probability) * config.jump_scale * rng.standard_normal(steps)
    own_logvol = ou_path(rng.standard_normal(steps), rng.standard_normal(), config.vol_of_vol, VOL_HALF_LIFE_MINUTES)
    logvol = math.sqrt(0.5) * (common.common_logvol + own_logvol)
    shape = np.concatenate([np.ones(BURN_IN_MINUTES), vol_profile(minutes)])
    # Momentum amplifies low-frequency moves by 1 / (1 - a*k); scaling the noise by (1 - a*k) keeps the
    # symbol's daily volatility near annual_vol whatever alpha is.
    persistence = 1.0 - config.ar_coefficient * config.signal_minutes
    sigma = (
        profile.annual_vol / math.sqrt(MINUTES_PER_YEAR) * persistence * common.regime * shape
        * np.exp(logvol - config.vol_of_vol**2 / 2)
    )
    rho = profile.factor_loading
    noise = rho * common.factor + math.sqrt(1 - rho * rho) * own
    returns = momentum_filter(sigma * noise, config.ar_coefficient, config.signal_minutes)

    open_mid = opening_price(config, symbol, day)
    log_return = returns[BURN_IN_MINUTES:]
    mid = open_mid * np.exp(np.cumsum(log_return))
    sigma_day = sigma[BURN_IN_MINUTES:]
    spread = spread_ticks(sigma_day, mid, config.spread_vol_ratio)
    bid, ask = quote_cents(mid, spread)
    opening = np.array([open_mid])
    open_bid, open_ask = quote_cents(
        opening, spread_ticks(sigma[BURN_IN_MINUTES - 1: BURN_IN_MINUTES], opening, config.spread_vol_ratio)
    )

    # Standardized minute innovation: the order flow that moved the price this minute.
    jump_var = 1.0 + config.jump_probability * config.jump_scale**2
    flow = noise[BURN_IN_MINUTES:] / math.sqrt(jump_var)
    trades = _trades(config, symbol, day, profile.trade_rate, logvol[BURN_IN_MINUTES:], flow)
    counts, minute, offset, buy, bridge, size = trades

    # Each trade hits the quote around a Brownian bridge between the minute's start and end mids; the first
    # trade of a minute hits the previous bar-end quote and the last one the bar-end quote, so bars agree.
    mid_start = np.concatenate([[open_mid], mid[:-1]])
    tau = offset / US_PER_MINUTE
    mid_at = mid_start[minute] + tau * (mid[minute] - mid_start[minute])
    mid_at += sigma_day[minute] * mid[minute] * np.sqrt(tau * (1 - tau)) * bridge
    trade_bid, trade_ask = quote_cents(mid_at, spread[minute])
    starts = np.cumsum(counts) - counts
    pos = np.arange(len(minute)) - starts[minute]
    first, last = pos == 0, pos == counts[minute] - 1
    prev_bid = np.concatenate([open_bid, bid[:-1]])
    prev_ask = np.concatenate([open_ask, ask[:-1]])
    trade_bid = np.where(last, bid[minute], np.where(first, prev_bid[minute], trade_bid))
    trade_ask = np.where(last, ask[minute], np.where(first, prev_ask[minute], trade_ask))
    price = np.where(buy, trade_ask, trade_bid)

    return SymbolDay(
        symbol=symbol, session=session, open_mid=open_mid,
        open_bid_cents=int(open_bid[0]), open_ask_cents=int(open_ask[0]),
        mid=mid, log_return=log_return, sigma=sigma_day, bid_cents=bid, ask_cents=ask,
        trade_counts=counts, trade_minute=minute, trade_offset_us=offset, trade_price_cents=price,
        trade_size=size, trade_is_buy=buy, trade_bid_cents=trade_bid, trade_ask_cents=trade_ask,
    )


def clear_caches() -> None:
    """Forget generated days (tests use it to prove regeneration gives the same data)."""
    symbol_day.cache_clear()
    market_day.cache_clear()


def _trades(
    config: SyntheticMarketConfig, symbol: str, day: date, rate: float, logvol: np.ndarray, flow: np.ndarray
) -> tuple[np.ndarray, ...]:
    """Per-minute trade counts and, per trade: minute, time offset, side, bridge draw and size."""
    rng = stream(config.seed, "trades", symbol, day.isoformat())
    minutes = len(flow)
    # Busier when volatility is high; exp(h/2 - var/8) has mean 1 for h ~ N(0, var).
    intensity = rate * activity_profile(minutes) * np.exp(0.5 * logvol - config.vol_of_vol**2 / 8)
    counts = np.maximum(1, rng.poisson(intensity)).astype(np.int64)
    minute = np.repeat(np.arange(minutes), counts)
    n = len(minute)
    starts = np.cumsum(counts) - counts
    pos = np.arange(n) - starts[minute]
    # Distinct offsets >= 3 us apart leave room for a quote before and after each trade inside the minute.
    room = US_PER_MINUTE - 3 * counts[minute] - 5
    raw = np.floor(rng.random(n) * room).astype(np.int64)
    keyed = np.sort((minute.astype(np.int64) << 26) | raw)
    offset = (keyed & ((1 << 26) - 1)) + 3 * pos + 3
    p_buy = 1.0 / (1.0 + np.exp(-config.order_flow_sensitivity * flow[minute]))
    buy = rng.random(n) < p_buy
    bridge = rng.standard_normal(n)
    lots = rng.geometric(0.45, n) * 100
    odd = rng.random(n) < 0.08
    size = np.where(odd, rng.integers(1, 100, n), lots).astype(np.int64)
    return counts, minute, offset, buy, bridge, size
