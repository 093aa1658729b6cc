"""Rebuilding a past day's option chain from Alpaca's 1-minute bars: contracts + bars + snapshot grid -> rows.

Alpaca keeps option trades and bars from February 2024 on, but no option quotes and no past open interest. So a
reconstructed snapshot at time T carries what the bars that had ENDED by T tell: the last trade price, the contracts
traded so far today, the underlying's last price, and a Black-Scholes iv and greeks backed out of the last trade.
Bid, ask and open interest stay null, and every row says in `null_reason` which columns are null and why.

Nothing here touches the network (AlpacaSource fetches the inputs), and nothing at T reads a bar that ended after T:
a bar is stamped with its start and covers [start, start + 1 min), so it is usable at T only when start + 1 min <= T.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
from alpaca.data.models import Bar
from alpaca.trading.enums import ContractType
from alpaca.trading.models import OptionContract

from pipeline.contract.black_scholes import DAYS_PER_YEAR, bs_greeks, bs_price, implied_vol
from pipeline.contract.calendar import TradingSession, expiry_close, snapshot_times
from pipeline.contract.occ import standard_occ

# Alpaca's docs: "Currently we only offer historical option data since February 2024."
OPTION_HISTORY_START = date(2024, 2, 1)
BAR_LENGTH = timedelta(minutes=1)
_SECONDS_PER_YEAR = DAYS_PER_YEAR * 86_400

NO_QUOTES = "bid, ask: Alpaca keeps no historical option quotes"
NO_PAST_OPEN_INTEREST = "open_interest: Alpaca serves only the current open interest"
NO_TRADE_YET = "last, iv, greeks: no trade yet today"
# The lowest vol implied_vol searches, and the time value (half a cent) below which a price tells no vol.
MIN_VOL = 1e-4
MIN_TIME_VALUE = 0.005


@dataclass(frozen=True)
class ChainSettings:
    """How a past day's chain is rebuilt (AlpacaSource's constructor passes its keyword arguments through)."""

    snapshot_minutes: int = 15
    """Minutes between snapshots (the grid of `pipeline.contract.calendar.snapshot_times`)."""
    expiry_days: int = 45
    """Contracts expiring on the day itself up to this many calendar days later are kept."""
    strike_band: float = 0.10
    """Strikes within this fraction of the underlying's price at the FIRST snapshot are kept (0.10: +-10%)."""
    risk_free_rate: float = 0.045
    """Annual, continuously compounded rate for iv and greeks; one constant for every day (set it for your era)."""
    max_staleness_minutes: int | None = None
    """A last trade older than this leaves iv and greeks null (a stale price against a moved spot gives a false
    iv); None means `snapshot_minutes`."""

    def __post_init__(self) -> None:
        if self.snapshot_minutes < 1:
            raise ValueError(f"snapshot_minutes must be >= 1, got {self.snapshot_minutes}")
        if self.expiry_days < 0:
            raise ValueError(f"option_expiry_days must be >= 0, got {self.expiry_days}")
        if not 0 < self.strike_band < 1:
            raise ValueError(f"option_strike_band is a fraction of the price in (0, 1), got {self.strike_band}")
        if self.max_staleness_minutes is not None and self.max_staleness_minutes < 0:
            raise ValueError(f"max_staleness_minutes must be >= 0 or None, got {self.max_staleness_minutes}")

    @property
    def staleness(self) -> timedelta:
        minutes = self.snapshot_minutes if self.max_staleness_minutes is None else self.max_staleness_minutes
        return timedelta(minutes=minutes)


class _Tape:
    """One symbol's bars in time order: the close and the volume since the open as of any time T."""

    def __init__(self, bars: Sequence[Bar], session_open: datetime) -> None:
        todays = sorted((b for b in bars if b.timestamp.astimezone(UTC) >= session_open), key=lambda b: b.timestamp)
        self.ends = [b.timestamp.astimezone(UTC) + BAR_LENGTH for b in todays]
        self.closes = [float(b.close) for b in todays]
        self.volumes = np.cumsum([float(b.volume) for b in todays]).tolist()

    def _ended(self, at: datetime) -> int:
        """How many bars had ended by `at`."""
        return bisect.bisect_right(self.ends, at)

    def last(self, at: datetime) -> tuple[float, datetime] | None:
        """(close, end) of the latest bar ended by `at`, or None before the first one."""
        n = self._ended(at)
        return (self.closes[n - 1], self.ends[n - 1]) if n else None

    def volume(self, at: datetime) -> float:
        n = self._ended(at)
        return self.volumes[n - 1] if n else 0.0


def strike_bounds(spot: float, band: float) -> tuple[float, float]:
    return spot * (1 - band), spot * (1 + band)


def first_snapshot_spot(stock_bars: Sequence[Bar], session: TradingSession, settings: ChainSettings) -> float | None:
    """The underlying's price at the first snapshot: what the chain may be chosen by without looking ahead."""
    times = snapshot_times(session, settings.snapshot_minutes)
    last = _Tape(stock_bars, session.open).last(times[0]) if times else None
    return last[0] if last else None


def select_contracts(
    contracts: Sequence[OptionContract], day: date, spot: float, settings: ChainSettings
) -> list[OptionContract]:
    """The contracts of the day's chain: expiring in [day, day + expiry_days], strike within the band around `spot`
    (the first snapshot's price), one per symbol, ordered by expiry, strike and right."""
    low, high = strike_bounds(spot, settings.strike_band)
    last_expiry = day + timedelta(days=settings.expiry_days)
    chosen = {
        c.symbol: c for c in contracts if day <= c.expiration_date <= last_expiry and low <= c.strike_price <= high
    }
    return sorted(chosen.values(), key=lambda c: (c.expiration_date, c.strike_price, c.type.value))


def _years_to_expiry(expiry: date, at: datetime) -> float:
    return (expiry_close(expiry) - at).total_seconds() / _SECONDS_PER_YEAR


def reconstruct_chain(
    underlying: str,
    session: TradingSession,
    contracts: Sequence[OptionContract],
    option_bars: Mapping[str, Sequence[Bar]],
    stock_bars: Sequence[Bar],
    settings: ChainSettings,
) -> list[dict[str, Any]]:
    """raw.option_snapshots rows (without source and trading_day) for every contract at every snapshot time.

    `contracts` is the chain already chosen (`select_contracts`); a contract with no bar gets a row at each time
    anyway, with nulls and a reason. A snapshot time before the underlying's first bar has ended gets no rows: the
    table requires an underlying price.
    """
    stock = _Tape(stock_bars, session.open)
    tapes = [_Tape(option_bars.get(c.symbol, ()), session.open) for c in contracts]
    strikes = np.array([c.strike_price for c in contracts], dtype=np.float64)
    is_call = np.array([c.type == ContractType.CALL for c in contracts])
    rows: list[dict[str, Any]] = []
    for at in snapshot_times(session, settings.snapshot_minutes):
        spot = stock.last(at)
        if spot is None or not contracts:
            continue
        lasts = [tape.last(at) for tape in tapes]
        years = np.array([_years_to_expiry(c.expiration_date, at) for c in contracts])
        reasons = [_pricing_gap(last, t, at, settings) for last, t in zip(lasts, years, strict=True)]
        priced = np.array([r is None for r in reasons])
        iv, greeks, unpriced = _iv_and_greeks(lasts, spot[0], strikes, years, is_call, priced, settings.risk_free_rate)
        for i, contract in enumerate(contracts):
            reason = reasons[i] or unpriced[i]
            ok = reason is None
            rows.append(
                {
                    "underlying": underlying, "underlying_price": spot[0], "contract": standard_occ(contract.symbol),
                    "expiry": contract.expiration_date, "strike": contract.strike_price,
                    "right": "C" if is_call[i] else "P", "ts": at,
                    "bid": None, "ask": None, "last": lasts[i][0] if lasts[i] else None,
                    "volume": tapes[i].volume(at), "open_interest": None,
                    "iv": float(iv[i]) if ok else None,
                    **{g: float(greeks[g][i]) if ok else None for g in ("delta", "gamma", "theta", "vega")},
                    "reconstructed": True,
                    "null_reason": "; ".join([NO_QUOTES, NO_PAST_OPEN_INTEREST] + ([reason] if reason else [])),
                }
            )
    return rows


def _pricing_gap(last: tuple[float, datetime] | None, years: float, at: datetime, settings: ChainSettings) -> str | None:
    """Why iv and greeks cannot be backed out of the last trade at `at`, or None when they can."""
    if last is None:
        return NO_TRADE_YET
    if years <= 0:
        return "iv, greeks: the contract expires at this snapshot"
    age = at - last[1]  # at least this old: the trade happened before its bar ended
    if age > settings.staleness:
        return f"iv, greeks: last trade {math.floor(age.total_seconds() / 60)} min old"
    return None


def _iv_and_greeks(
    lasts: list[tuple[float, datetime] | None],
    spot: float,
    strikes: np.ndarray,
    years: np.ndarray,
    is_call: np.ndarray,
    priced: np.ndarray,
    rate: float,
) -> tuple[np.ndarray, dict[str, np.ndarray], list[str | None]]:
    """Black-Scholes iv and greeks where `priced` (one vectorized solve per snapshot time), NaN elsewhere, and why
    a priced contract still got none."""
    n = len(lasts)
    iv = np.full(n, np.nan)
    greeks = {g: np.full(n, np.nan) for g in ("delta", "gamma", "theta", "vega")}
    unpriced: list[str | None] = [None] * n
    if not priced.any():
        return iv, greeks, unpriced
    index = np.flatnonzero(priced)
    prices = np.array([lasts[i][0] for i in index])  # priced rows have a last trade
    strike, t, call = strikes[index], years[index], is_call[index]
    solved = implied_vol(prices, spot, strike, t, rate, call)
    # A price at its no-vol floor carries no vol: any vol would reprice it to the cent, and the solve returns noise.
    time_value = prices - bs_price(spot, strike, t, rate, MIN_VOL, call)
    for i, value, tv in zip(index, solved, time_value, strict=True):
        if not np.isfinite(value):
            unpriced[i] = "iv, greeks: last price outside Black-Scholes bounds"
        elif tv < MIN_TIME_VALUE:
            unpriced[i] = "iv, greeks: last price has no time value to imply a vol from"
        else:
            iv[i] = value
    good = index[np.isfinite(iv[index])]
    if good.size:
        values = bs_greeks(spot, strikes[good], years[good], rate, iv[good], is_call[good])
        for g in greeks:
            greeks[g][good] = values[g]
    return iv, greeks, unpriced
