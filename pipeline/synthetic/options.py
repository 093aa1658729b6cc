"""Option-chain snapshots of the synthetic market, priced by Black-Scholes on a skewed IV surface whose ATM level is
the variance that follows plus a volatility risk premium.

Chains are listed once per day (strikes centred on the opening price; a same-day expiry and Fridays that trade)
and snapshotted every `snapshot_minutes`. The ATM implied variance of an expiry is the market's own expectation
of the log-price variance from the snapshot to that expiry's close (`forward_variance`: the rest of today's
session at the current log-vol mean-reverting to the day's level, then each session to expiry at the long-run
level, jumps and momentum included), with `iv_premium` vol points added on the trading-time clock. Black-Scholes
runs on calendar time (as quotes are read), so the quoted IV is that variance over the calendar years left. A put
skew and a smile in standardized moneyness sit on top. With `iv_premium = 0` option prices are fair (a short
straddle earns nothing before costs); above 0 selling volatility earns the premium (docs/SYNTHETIC_MARKET.md).
"""

from __future__ import annotations

import math
from datetime import date, timedelta

import numpy as np
import polars as pl

from pipeline.contract.black_scholes import bs_greeks, bs_price
from pipeline.contract.calendar import REGULAR_SESSION_MINUTES, is_trading_day, trading_days, trading_session
from pipeline.contract.occ import occ_symbol
from pipeline.synthetic.config import MINUTES_PER_YEAR, SyntheticMarketConfig, stream, symbol_profile
from pipeline.synthetic.paths import (
    US_PER_MINUTE,
    VOL_HALF_LIFE_MINUTES,
    SymbolDay,
    market_day,
    vol_profile,
)

SECONDS_PER_YEAR = 365.0 * 86400
SKEW = -0.12  # IV change per unit of standardized log-moneyness (puts richer)
SMILE = 0.03
MIN_IV = 0.05
def strike_increment(price: float) -> float:
    """Listed strike spacing for an underlying at `price`."""
    for limit, step in ((25.0, 0.5), (100.0, 1.0), (200.0, 2.5)):
        if price < limit:
            return step
    return 5.0


def expiries(trading_day: date, target_days: tuple[int, ...]) -> list[date]:
    """For each target, the Friday on or after day + target (the Thursday before if that Friday is a holiday);
    a target of 0 is the day itself (a same-day expiry)."""
    chosen: set[date] = set()
    for days in target_days:
        if days == 0:  # a daily expiry, settling at this session's close
            chosen.add(trading_day)
            continue
        target = trading_day + timedelta(days=days)
        friday = target + timedelta(days=(4 - target.weekday()) % 7)
        while not is_trading_day(friday) and friday > trading_day:
            friday -= timedelta(days=1)
        chosen.add(max(friday, trading_day))
    return sorted(chosen)


def smile(atm: np.ndarray, t: np.ndarray, log_moneyness: np.ndarray) -> np.ndarray:
    """IV by strike from the ATM IV (calendar years `t`, log(K/F)): put skew and smile in standardized moneyness."""
    x = log_moneyness / (atm * np.sqrt(t))
    return np.maximum(MIN_IV, atm * (1.0 + SKEW * x + SMILE * x * x))


def forward_variance(config: SyntheticMarketConfig, sd: SymbolDay, bar: np.ndarray,
                     expiry_list: list[date]) -> tuple[np.ndarray, np.ndarray]:
    """(expected log-price variance from each snapshot bar to each expiry's close, the same span in trading years).

    Today: sum over the session's minutes after `bar` of E[sigma(m)^2 | now] u(m)^2 c^2 / (1 - a k)^2, where the
    log-vol h is an OU (E[e^{2h(m)} | h] = exp(2 phi^d h + 2 s^2 (1 - phi^2d))), c^2 = 1 + jump variance and
    1 / (1 - a k)^2 the momentum's amplification of multi-minute moves (which cancels the (1 - a k) in sigma). Each later session to expiry: a regular
    session at the long-run level (the day's regime and log-vol drawn afresh). Floored at one minute of today's
    variance, so a contract at its close keeps a finite IV. Shapes [snapshots, expiries].
    """
    profile = symbol_profile(config.seed, sd.symbol, config.trades_per_minute)
    minutes = sd.session.minutes
    day = market_day(config, sd.session.trading_day, minutes)
    s_h, s_d = config.vol_of_vol, config.vol_regime_dispersion
    c2 = 1.0 + config.jump_probability * config.jump_scale**2
    u = vol_profile(minutes)
    base = profile.annual_vol * day.regime / math.sqrt(MINUTES_PER_YEAR)  # sigma / ((1 - a k) u e^{h - s^2/2})
    persistence = 1.0 - config.ar_coefficient * config.signal_minutes
    # The log-vol state at each snapshot bar, read back from the minute's sigma.
    h_now = np.log(sd.sigma[bar] / (base * persistence * u[bar])) + s_h**2 / 2
    phi = 0.5 ** (1.0 / VOL_HALF_LIFE_MINUTES)
    ahead = np.arange(minutes)[None, :] - bar[:, None]  # minutes after each snapshot bar
    decay = phi ** np.maximum(ahead, 0)
    per_minute = base**2 * np.exp(2 * decay * h_now[:, None] + 2 * s_h**2 * (1 - decay**2) - s_h**2) * u[None, :] ** 2
    today = np.where(ahead > 0, per_minute, 0.0).sum(axis=1) * c2
    floor = base**2 * np.exp(2 * h_now - s_h**2) * u[bar] ** 2 * c2
    long_run_session = (profile.annual_vol**2 * math.exp(s_d**2 + s_h**2) * c2 / MINUTES_PER_YEAR
                        * REGULAR_SESSION_MINUTES)
    later = np.array([len(trading_days(sd.session.trading_day + timedelta(days=1), e)) if e > sd.session.trading_day
                      else 0 for e in expiry_list], dtype=float)
    variance = np.maximum(today, floor)[:, None] + later[None, :] * long_run_session
    remaining = (minutes - 1 - bar).astype(float)
    years = (np.maximum(remaining, 1.0)[:, None] + later[None, :] * REGULAR_SESSION_MINUTES) / MINUTES_PER_YEAR
    return variance, years


def _tick_round(price: np.ndarray, up: bool) -> np.ndarray:
    """Options quote in $0.01 below $3 and $0.05 above."""
    tick = np.where(price < 3.0, 0.01, 0.05)
    steps = np.ceil(price / tick - 1e-9) if up else np.floor(price / tick + 1e-9)
    return np.round(steps * tick, 2)


def option_snapshots(config: SyntheticMarketConfig, sd: SymbolDay) -> pl.DataFrame:
    """One row per contract per snapshot (raw.option_snapshots columns, without source/trading_day)."""
    session = sd.session
    rng = stream(config.seed, "options", sd.symbol, session.trading_day.isoformat())

    increment = strike_increment(sd.open_mid)
    atm_strike = round(sd.open_mid / increment) * increment
    offsets = np.arange(config.strikes_per_expiry) - config.strikes_per_expiry // 2
    strikes = np.round(atm_strike + increment * offsets, 2)
    strikes = strikes[strikes > 0]
    expiry_list = expiries(session.trading_day, config.option_expiry_days)
    expiry_close = {e: trading_session(e).close for e in expiry_list}

    grid = [(e, k, r) for e in expiry_list for k in strikes for r in ("C", "P")]
    expiry_col = [g[0] for g in grid]
    strike_col = np.array([g[1] for g in grid])
    is_call = np.array([g[2] == "C" for g in grid])
    contracts = [occ_symbol(sd.symbol, e, r, k) for e, k, r in grid]
    n_contracts = len(grid)
    # Open interest is a property of the listing (fixed for the day), larger near the money and for short expiries.
    moneyness = np.log(strike_col / sd.open_mid)
    liquidity = np.exp(-0.5 * (moneyness / 0.08) ** 2) + 0.05
    open_interest = rng.poisson(2000 * liquidity).astype(np.float64)

    snap_minutes = np.arange(config.snapshot_minutes, session.minutes + 1, config.snapshot_minutes)
    n_snaps = len(snap_minutes)
    bar = snap_minutes - 1
    spot = (sd.bid_cents[bar] + sd.ask_cents[bar]) / 200.0
    open_us = int(session.open.timestamp() * 1_000_000)
    snap_us = open_us + US_PER_MINUTE * snap_minutes

    settle_us = np.array([expiry_close[e].timestamp() * 1e6 for e in expiry_col])
    t = (settle_us[None, :] - snap_us[:, None]) / 1e6 / SECONDS_PER_YEAR
    t = np.maximum(t, 1.0 / (365 * 24 * 60))  # a contract expiring at this close still has a minute left
    spot_2d = np.repeat(spot[:, None], n_contracts, axis=1)
    forward = spot_2d * np.exp(config.risk_free_rate * t)
    # A session shorter than the snapshot interval (an early close) has no snapshot: an empty chain.
    if n_snaps:
        variance, trading_years = forward_variance(config, sd, bar, expiry_list)
        # The premium in vol points on the trading-time clock, then Black-Scholes' calendar clock.
        priced = (np.sqrt(variance / trading_years) + config.iv_premium) ** 2 * trading_years
        expiry_index = {e: i for i, e in enumerate(expiry_list)}
        per_contract = priced[:, [expiry_index[e] for e in expiry_col]]
        atm = np.sqrt(per_contract / t)
        iv = smile(atm, t, np.log(strike_col[None, :] / forward))
    else:
        iv = np.empty((0, n_contracts))
    calls = np.broadcast_to(is_call, t.shape)
    strikes_2d = np.broadcast_to(strike_col, t.shape)
    price = bs_price(spot_2d, strikes_2d, t, config.risk_free_rate, iv, calls)
    greeks = bs_greeks(spot_2d, strikes_2d, t, config.risk_free_rate, iv, calls)

    half_spread = 0.005 + 0.03 * price
    bid = np.maximum(0.0, _tick_round(price - half_spread, up=False))
    ask = np.maximum(_tick_round(price + half_spread, up=True), bid + 0.01)
    last = np.clip(np.round(price + half_spread * rng.uniform(-1, 1, t.shape), 2), bid, ask)
    # Cumulative volume since the open, so it never decreases from one snapshot to the next.
    per_interval = rng.poisson(np.broadcast_to(40 * liquidity, t.shape) * config.snapshot_minutes / 390)
    volume = np.cumsum(per_interval, axis=0).astype(np.float64)

    rows = n_snaps * n_contracts
    return pl.DataFrame({
        "underlying": [sd.symbol] * rows,
        "underlying_price": spot_2d.ravel(),
        "contract": contracts * n_snaps,
        "expiry": expiry_col * n_snaps,
        "strike": np.tile(strike_col, n_snaps),
        "right": np.where(np.tile(is_call, n_snaps), "C", "P"),
        "ts": pl.Series(np.repeat(snap_us, n_contracts)).cast(pl.Datetime("us", "UTC")),
        "bid": bid.ravel(), "ask": ask.ravel(), "last": last.ravel(),
        "volume": volume.ravel(), "open_interest": np.tile(open_interest, n_snaps),
        "iv": iv.ravel(), **{name: values.ravel() for name, values in greeks.items()},
        "delayed": pl.Series([False] * rows, dtype=pl.Boolean),  # priced at ts: live by construction
    })
