"""Option-chain snapshots of the synthetic market, priced by Black-Scholes on a skewed, term-structured IV surface.

Chains are listed once per day (strikes centred on the opening price, expiries rolled to Fridays that trade) and
snapshotted every `snapshot_minutes`. The surface follows the symbol's current volatility: ATM IV starts at the
annualized spot vol (times a variance premium) and mean-reverts towards the long-run vol with expiry; a put skew
and a smile in standardized moneyness sit on top.
"""

from __future__ import annotations

import math
from datetime import date, timedelta

import numpy as np
import polars as pl

from pipeline.contract.black_scholes import bs_greeks, bs_price
from pipeline.contract.calendar import is_trading_day, trading_session
from pipeline.contract.occ import occ_symbol
from pipeline.synthetic.config import MINUTES_PER_YEAR, SyntheticMarketConfig, stream, symbol_profile
from pipeline.synthetic.paths import US_PER_MINUTE, SymbolDay, vol_profile

SECONDS_PER_YEAR = 365.0 * 86400
VARIANCE_PREMIUM = 1.10  # implied vol trades above realized
VOL_MEAN_REVERSION = 6.0  # per year: how fast the term structure returns to the long-run vol
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
    """For each target, the Friday on or after day + target (the Thursday before if that Friday is a holiday)."""
    chosen: set[date] = set()
    for days in target_days:
        target = trading_day + timedelta(days=days)
        friday = target + timedelta(days=(4 - target.weekday()) % 7)
        while not is_trading_day(friday) and friday > trading_day:
            friday -= timedelta(days=1)
        chosen.add(max(friday, trading_day))
    return sorted(chosen)


def implied_vol_surface(
    atm_now: float, long_run: float, t: np.ndarray, log_moneyness: np.ndarray
) -> np.ndarray:
    """IV by time to expiry (years) and log(K/F): mean-reverting ATM term structure plus skew and smile."""
    decay = (1.0 - np.exp(-VOL_MEAN_REVERSION * t)) / (VOL_MEAN_REVERSION * t)
    atm = np.sqrt(long_run**2 + (atm_now**2 - long_run**2) * decay)
    x = log_moneyness / (atm * np.sqrt(t))
    return np.maximum(MIN_IV, atm * (1.0 + SKEW * x + SMILE * x * x))


def _tick_round(price: np.ndarray, up: bool) -> np.ndarray:
    """Options quote in $0.01 below $3 and $0.05 above."""
    tick = np.where(price < 3.0, 0.01, 0.05)
    steps = np.ceil(price / tick - 1e-9) if up else np.floor(price / tick + 1e-9)
    return np.round(steps * tick, 2)


def option_snapshots(config: SyntheticMarketConfig, sd: SymbolDay) -> pl.DataFrame:
    """One row per contract per snapshot (raw.option_snapshots columns, without source/trading_day)."""
    session = sd.session
    profile = symbol_profile(config.seed, sd.symbol, config.trades_per_minute)
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
    # The current annualized vol without the intraday U-shape and without the momentum scaling.
    persistence = 1.0 - config.ar_coefficient * config.signal_minutes
    spot_vol = sd.sigma[bar] / vol_profile(session.minutes)[bar] / persistence * math.sqrt(MINUTES_PER_YEAR)
    open_us = int(session.open.timestamp() * 1_000_000)
    snap_us = open_us + US_PER_MINUTE * snap_minutes

    settle_us = np.array([expiry_close[e].timestamp() * 1e6 for e in expiry_col])
    t = (settle_us[None, :] - snap_us[:, None]) / 1e6 / SECONDS_PER_YEAR
    t = np.maximum(t, 1.0 / (365 * 24 * 60))  # a contract expiring at this close still has a minute left
    spot_2d = np.repeat(spot[:, None], n_contracts, axis=1)
    forward = spot_2d * np.exp(config.risk_free_rate * t)
    # A session shorter than the snapshot interval (an early close) has no snapshot: an empty chain.
    iv = np.vstack([
        implied_vol_surface(VARIANCE_PREMIUM * spot_vol[i], VARIANCE_PREMIUM * profile.annual_vol, t[i],
                            np.log(strike_col / forward[i]))
        for i in range(n_snaps)
    ]) if n_snaps else np.empty((0, n_contracts))
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
    })
