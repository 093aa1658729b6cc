"""Option-chain snapshot tensors for the options env, built once and kept on the device.

Layout: `[days, snapshots, expiries, strikes, right]` (right 0 = call, 1 = put). Each trading day has a fixed
grid of expiries and strikes (chosen at the day's first snapshot), so an index is the same contract all day.
Builders: from `option_snapshots` rows (the raw-table contract; polars imported lazily), from the synthetic
market, or from a small torch Black-Scholes chain that needs neither polars nor the market (the default of the
gym id, and the GPU path).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from datetime import date, datetime, time, tzinfo
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    import polars as pl

SESSION_DAYS = 6.5 / 24.0  # length of a regular session in calendar days


@dataclass
class OptionChainTensors:
    """One underlying's chain: quotes per contract plus the grid that names the contracts."""

    bid: torch.Tensor  # [D, S, E, K, 2]
    ask: torch.Tensor  # [D, S, E, K, 2]
    mid: torch.Tensor  # [D, S, E, K, 2]
    iv: torch.Tensor  # [D, S, E, K, 2]
    delta: torch.Tensor  # [D, S, E, K, 2]
    strike: torch.Tensor  # [D, E, K], fixed per day
    expiry_days: torch.Tensor  # [D, S, E] calendar days left; <= 0 means the contract settles at that snapshot
    underlying: torch.Tensor  # [D, S] underlying price

    def __post_init__(self) -> None:
        d, s, e, k, r = self.bid.shape
        expected = {
            "bid": (d, s, e, k, r), "ask": (d, s, e, k, r), "mid": (d, s, e, k, r), "iv": (d, s, e, k, r),
            "delta": (d, s, e, k, r), "strike": (d, e, k), "expiry_days": (d, s, e), "underlying": (d, s),
        }
        for name, shape in expected.items():
            got = tuple(getattr(self, name).shape)
            if got != shape:
                raise ValueError(f"OptionChainTensors.{name} has shape {got}, expected {shape} "
                                 "([days, snapshots, expiries, strikes, right] layout)")
        if r != 2:
            raise ValueError(f"the last dim of the quote tensors is the right (call, put) and must be 2, got {r}")
        if s < 2:
            raise ValueError(f"need at least 2 snapshots per day to fill at the next one, got {s}")

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """(days, snapshots, expiries, strikes)."""
        d, s, e, k, _ = self.bid.shape
        return d, s, e, k

    def to(self, device: torch.device | str, dtype: torch.dtype = torch.float32) -> OptionChainTensors:
        return OptionChainTensors(**{f.name: getattr(self, f.name).to(device, dtype) for f in fields(self)})


def _d1(spot: torch.Tensor, strike: torch.Tensor, years: torch.Tensor, iv: torch.Tensor,
        rate: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(d1, iv * sqrt(t), t) with t = years floored just above 0, so expired contracts stay finite."""
    t = years.clamp_min(1e-9)
    vol = iv * t.sqrt()
    return (torch.log(spot / strike) + (rate + 0.5 * iv**2) * t) / vol, vol, t


def black_scholes(spot: torch.Tensor, strike: torch.Tensor, years: torch.Tensor, iv: torch.Tensor,
                  rate: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(call, put, call_delta, put_delta); at zero time left: intrinsic value and a step delta."""
    d1, vol, t = _d1(spot, strike, years, iv, rate)
    d2 = d1 - vol
    disc = torch.exp(-rate * t)
    call = spot * torch.special.ndtr(d1) - strike * disc * torch.special.ndtr(d2)
    put = call - spot + strike * disc
    expired = years <= 0
    call = torch.where(expired, (spot - strike).clamp_min(0), call)
    put = torch.where(expired, (strike - spot).clamp_min(0), put)
    call_delta = torch.where(expired, (spot > strike).to(spot.dtype), torch.special.ndtr(d1))
    return call, put, call_delta, call_delta - 1.0


def black_scholes_gamma_vega(spot: torch.Tensor, strike: torch.Tensor, years: torch.Tensor, iv: torch.Tensor,
                             rate: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(gamma per $1 of spot, vega per 1.0 of vol), the same for calls and puts; 0 at zero time left."""
    d1, vol, t = _d1(spot, strike, years, iv, rate)
    pdf = torch.exp(-0.5 * d1**2) / (2 * torch.pi) ** 0.5
    alive = years > 0
    gamma = torch.where(alive, pdf / (spot * vol), torch.zeros_like(pdf))
    vega = torch.where(alive, spot * pdf * t.sqrt(), torch.zeros_like(pdf))
    return gamma, vega


def black_scholes_chain(days: int = 2, snapshots: int = 14, expiries: tuple[float, ...] = (0.0, 7.0, 30.0),
                        strikes: int = 9, strike_step: float = 1.0, spot: float = 100.0, vol: float = 0.2,
                        iv_skew: float = -0.3, seed: int = 0) -> OptionChainTensors:
    """A small chain priced with Black-Scholes on a skewed IV smile over a random-walk underlying.

    `expiries` are calendar days after each day's close (0 = expires at the close, so it settles in-episode).
    Needs only torch, so the gym id's default market builds in milliseconds and anywhere.
    """
    g = torch.Generator().manual_seed(seed)
    dt_years = SESSION_DAYS / (snapshots - 1) / 365.0
    overnight = torch.randn(days, 1, generator=g, dtype=torch.float64) * vol * math.sqrt(1 / 252)
    steps = torch.randn(days, snapshots - 1, generator=g, dtype=torch.float64) * vol * math.sqrt(dt_years)
    log_path = torch.cat([overnight.cumsum(0), overnight.cumsum(0) + steps.cumsum(1)], dim=1)
    underlying = spot * torch.exp(log_path)  # [D, S]
    atm = torch.round(underlying[:, 0] / strike_step) * strike_step
    offsets = (torch.arange(strikes, dtype=torch.float64) - strikes // 2) * strike_step
    n_exp = len(expiries)
    strike = (atm[:, None, None] + offsets[None, None, :]).expand(days, n_exp, strikes).contiguous()
    left_in_day = (snapshots - 1 - torch.arange(snapshots, dtype=torch.float64)) / (snapshots - 1) * SESSION_DAYS
    expiry_days = torch.tensor(expiries, dtype=torch.float64)[None, None, :] + left_in_day[None, :, None]
    expiry_days = expiry_days.expand(days, snapshots, n_exp).contiguous()
    s = underlying[:, :, None, None]
    k = strike[:, None, :, :]
    moneyness = torch.log(k / s)
    years = (expiry_days / 365.0)[:, :, :, None]
    iv = (vol + iv_skew * moneyness + 0.02 / (1.0 + expiry_days[..., None])).clamp_min(0.05)
    call, put, call_delta, put_delta = black_scholes(s, k, years, iv)
    mid = torch.stack([call, put], dim=-1)
    half_spread = 0.01 + 0.01 * mid
    return OptionChainTensors(
        bid=(mid - half_spread).clamp_min(0.0), ask=mid + half_spread, mid=mid,
        iv=torch.stack([iv, iv], dim=-1), delta=torch.stack([call_delta, put_delta], dim=-1),
        strike=strike, expiry_days=expiry_days, underlying=underlying,
    ).to("cpu")


def _fill_along_snapshots(a: np.ndarray) -> np.ndarray:
    """Forward- then backward-fill NaNs along axis 0 (a contract missing from one snapshot keeps its quote)."""
    out = a.copy()
    for i in range(1, len(out)):
        out[i] = np.where(np.isnan(out[i]), out[i - 1], out[i])
    for i in range(len(out) - 2, -1, -1):
        out[i] = np.where(np.isnan(out[i]), out[i + 1], out[i])
    return out


def chain_tensors_from_snapshots(frame: pl.DataFrame, expiries: int = 3, strikes: int = 9) -> OptionChainTensors:
    """Tensors from `raw.option_snapshots` rows of ONE underlying (any number of trading days).

    Per day: the first `expiries` expiry dates on or after the day, and per expiry the `strikes` strikes nearest
    the first snapshot's underlying price. Every day must have the same number of snapshot times.
    """
    from zoneinfo import ZoneInfo

    import polars as pl

    if frame.is_empty():
        raise ValueError("no option_snapshots rows: fetch or ingest a chain first")
    if frame["underlying"].n_unique() != 1:
        raise ValueError(f"rows of one underlying expected, got {frame['underlying'].unique().to_list()}")
    new_york = ZoneInfo("America/New_York")
    days = sorted(frame["trading_day"].unique().to_list())
    per_day: list[dict[str, np.ndarray]] = []
    for day in days:
        rows = frame.filter(pl.col("trading_day") == day)
        times = sorted(rows["ts"].unique().to_list())
        exps = sorted(e for e in rows["expiry"].unique().to_list() if e >= day)[:expiries]
        if len(exps) < expiries:
            raise ValueError(f"{day}: only {len(exps)} expiries on or after the day, need {expiries}; "
                             "lower `expiries` or fetch a wider chain")
        spot0 = rows.filter(pl.col("ts") == times[0])["underlying_price"][0]
        quote = {n: np.full((len(times), expiries, strikes, 2), np.nan) for n in ("bid", "ask", "iv", "delta")}
        grid = np.zeros((expiries, strikes))
        for e, exp in enumerate(exps):
            avail = np.array(sorted(rows.filter(pl.col("expiry") == exp)["strike"].unique().to_list()))
            if len(avail) < strikes:
                raise ValueError(f"{day} expiry {exp}: {len(avail)} strikes, need {strikes}; lower `strikes`")
            grid[e] = np.sort(avail[np.argsort(np.abs(avail - spot0), kind="stable")[:strikes]])
        t_index = {t: i for i, t in enumerate(times)}
        e_index = {x: i for i, x in enumerate(exps)}
        sub = rows.filter(pl.col("expiry").is_in(exps))
        for r in sub.select("ts", "expiry", "strike", "right", "bid", "ask", "iv", "delta").iter_rows():
            e = e_index[r[1]]
            k = np.flatnonzero(np.isclose(grid[e], r[2]))
            if len(k):
                for name, value in zip(("bid", "ask", "iv", "delta"), r[4:], strict=True):
                    quote[name][t_index[r[0]], e, k[0], 0 if r[3] == "C" else 1] = value
        for name in quote:
            quote[name] = _fill_along_snapshots(quote[name])
            if np.isnan(quote[name]).any():
                raise ValueError(f"{day}: a grid contract has no {name} at any snapshot; check the chain rows")
        spot = sub.group_by("ts").agg(pl.col("underlying_price").first()).sort("ts")["underlying_price"]
        settle = [datetime_at_close(x, new_york) for x in exps]
        left = np.array([[(c - t).total_seconds() / 86400.0 for c in settle] for t in times])
        left = np.maximum(left, 0.0)
        left[-1] = np.where(np.array(exps) == day, 0.0, left[-1])  # same-day expiries settle at the last snapshot
        per_day.append({**quote, "strike": grid, "expiry_days": left, "underlying": spot.to_numpy()})
    n_snaps = {len(p["underlying"]) for p in per_day}
    if len(n_snaps) != 1:
        raise ValueError(f"days have different snapshot counts {sorted(n_snaps)}; build one tensor per day length")
    stacked = {n: torch.from_numpy(np.stack([p[n] for p in per_day])) for n in per_day[0]}
    stacked["mid"] = 0.5 * (stacked["bid"] + stacked["ask"])
    return OptionChainTensors(**stacked).to("cpu")


def datetime_at_close(day: date, tz: tzinfo) -> datetime:
    """The regular close (16:00 local) of `day`: when an expiring contract settles."""
    return datetime.combine(day, time(16, 0), tzinfo=tz)


def synthetic_chain_tensors(days: int = 2, seed: int | None = None, symbol: str = "SYMA", expiries: int = 3,
                            strikes: int = 9, start: str = "2024-07-01") -> OptionChainTensors:
    """Tensors from the embedded synthetic market's option snapshots for the first `days` trading days from
    `start` (seed None: the market's default seed)."""
    from datetime import timedelta

    import polars as pl

    from pipeline.market.calendar import trading_days, trading_session
    from pipeline.market.synthetic import SyntheticMarket, SyntheticMarketConfig

    first = date.fromisoformat(start)
    sessions = [trading_session(d) for d in trading_days(first, first + timedelta(days=7 * days + 7))][:days]
    config = SyntheticMarketConfig() if seed is None else SyntheticMarketConfig(seed=seed)
    frame = pl.concat([SyntheticMarket(config).fetch("option_snapshots", s, [symbol]) for s in sessions])
    return chain_tensors_from_snapshots(frame, expiries=expiries, strikes=strikes)
