"""Option-chain snapshot tensors for the options env, built once and kept on the device.

Layout: `[days, snapshots, expiries, strikes, right]` (right 0 = call, 1 = put). Each trading day has a fixed
grid of expiries and strikes (chosen at the day's first snapshot), so an index is the same contract all day.
Builders: from `option_snapshots` rows (the raw-table contract, + `features.options` rows; polars imported lazily;
the warehouse loader reads them), from the synthetic market, or from a small torch Black-Scholes chain that needs
neither polars nor the market (the default of the gym id, and the GPU path). Quotes are filled forward only, to
mark and close what is held; a position opens only on a contract `quoted` at that very snapshot, so an order never
fills at a stale quote the agent already saw. Before its first quote of the day a contract's values are 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from pipeline.contract.black_scholes import ArrayMath, option_greeks, option_values
from pipeline.contract.calendar import REGULAR_SESSION_MINUTES, expiry_close
from pipeline.envs.point_in_time import fill_forward, observation_arrays

if TYPE_CHECKING:
    import polars as pl

SESSION_DAYS = REGULAR_SESSION_MINUTES / (24 * 60)  # length of a regular session in calendar days


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
    quoted: torch.Tensor | None = None
    """bool [D, S, E, K, 2]: the contract has a bid and ask of its own at this snapshot (default: all). Where False
    no position opens on it; its quote tensors hold its last quote of the day (0 before the first one)."""
    features: torch.Tensor | None = None
    """float [D, S, F]: features.options columns of the snapshot (values then `<name>_missing` flags; default none)."""
    feature_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        d, s, e, k, r = self.bid.shape
        if self.quoted is None:
            self.quoted = torch.ones(self.bid.shape, dtype=torch.bool, device=self.bid.device)
        if self.features is None:
            self.features = torch.zeros((d, s, 0), dtype=self.bid.dtype, device=self.bid.device)
        expected = {
            "bid": (d, s, e, k, r), "ask": (d, s, e, k, r), "mid": (d, s, e, k, r), "iv": (d, s, e, k, r),
            "delta": (d, s, e, k, r), "strike": (d, e, k), "expiry_days": (d, s, e), "underlying": (d, s),
            "quoted": (d, s, e, k, r), "features": (d, s, len(self.feature_names)),
        }
        for name, shape in expected.items():
            got = tuple(getattr(self, name).shape)
            if got != shape:
                raise ValueError(f"OptionChainTensors.{name} has shape {got}, expected {shape} "
                                 "([days, snapshots, expiries, strikes, right] layout, one feature per name)")
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
        """A copy on `device`, the numbers as `dtype` (`quoted` stays bool)."""
        moved = {
            f.name: getattr(self, f.name).to(device, torch.bool if f.name == "quoted" else dtype)
            for f in fields(self)
            if f.name != "feature_names"
        }
        return OptionChainTensors(**moved, feature_names=self.feature_names)


def chain_days(chain: OptionChainTensors, days: range) -> OptionChainTensors:
    """The chain restricted to `days` (every tensor is indexed by day first)."""
    sliced = {f.name: getattr(chain, f.name)[days.start:days.stop] for f in fields(chain) if f.name != "feature_names"}
    return OptionChainTensors(**sliced, feature_names=chain.feature_names)


TORCH_MATH = ArrayMath(exp=torch.exp, log=torch.log, sqrt=torch.sqrt, ndtr=torch.special.ndtr)
"""The functions of `pipeline.contract.black_scholes`' formulas in torch, so chains are priced on the device."""


def _alive_years(years: torch.Tensor) -> torch.Tensor:
    """Years floored just above 0, so the formulas stay finite on expired contracts (they are then replaced)."""
    return years.clamp_min(1e-9)


def black_scholes(spot: torch.Tensor, strike: torch.Tensor, years: torch.Tensor, iv: torch.Tensor,
                  rate: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(call, put, call_delta, put_delta); at zero time left: intrinsic value and a step delta."""
    t = _alive_years(years)
    call, put = option_values(spot, strike, t, rate, iv, TORCH_MATH)
    expired = years <= 0
    call = torch.where(expired, (spot - strike).clamp_min(0), call)
    put = torch.where(expired, (strike - spot).clamp_min(0), put)
    delta = option_greeks(spot, strike, t, rate, iv, TORCH_MATH)["call_delta"]
    call_delta = torch.where(expired, (spot > strike).to(spot.dtype), delta)
    return call, put, call_delta, call_delta - 1.0


def black_scholes_gamma_vega(spot: torch.Tensor, strike: torch.Tensor, years: torch.Tensor, iv: torch.Tensor,
                             rate: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(gamma per $1 of spot, vega per 1.0 of vol), the same for calls and puts; 0 at zero time left."""
    greeks = option_greeks(spot, strike, _alive_years(years), rate, iv, TORCH_MATH)
    alive = years > 0
    gamma = torch.where(alive, greeks["gamma"], torch.zeros_like(greeks["gamma"]))
    vega = torch.where(alive, greeks["vega"], torch.zeros_like(greeks["vega"]))
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


QUOTE_FIELDS = ("bid", "ask", "iv", "delta")


def _day_chain(rows: pl.DataFrame, day: date, expiries: int, strikes: int,
               times: Sequence[datetime] | None = None) -> dict[str, Any]:
    """One day's [S, E, K, 2] quotes (NaN where a contract has no row or a null value), grid and times to expiry.

    The grid is what the first snapshot lists: its first `expiries` expiries on or after the day and, per expiry,
    the `strikes` strikes nearest its underlying price, so nothing listed later in the day decides it. `times` (the
    day's slots, some maybe empty) default to the rows' own snapshot times; an empty slot carries the underlying
    price of the one before it.
    """
    import polars as pl

    taken = sorted(rows["ts"].unique().to_list())
    times = list(times) if times is not None else taken
    first = rows.filter(pl.col("ts") == taken[0])
    exps = sorted(e for e in first["expiry"].unique().to_list() if e >= day)[:expiries]
    if len(exps) < expiries:
        raise ValueError(f"{day}: only {len(exps)} expiries on or after the day at the first snapshot, need "
                         f"{expiries}; lower `expiries` or fetch a wider chain")
    spot0 = first["underlying_price"][0]
    quote = {n: np.full((len(times), expiries, strikes, 2), np.nan) for n in QUOTE_FIELDS}
    grid = np.zeros((expiries, strikes))
    for e, exp in enumerate(exps):
        avail = np.array(sorted(first.filter(pl.col("expiry") == exp)["strike"].unique().to_list()))
        if len(avail) < strikes:
            raise ValueError(f"{day} expiry {exp}: {len(avail)} strikes at the first snapshot, need {strikes}; "
                             "lower `strikes`")
        grid[e] = np.sort(avail[np.argsort(np.abs(avail - spot0), kind="stable")[:strikes]])
    t_index = {t: i for i, t in enumerate(times)}
    e_index = {x: i for i, x in enumerate(exps)}
    sub = rows.filter(pl.col("expiry").is_in(exps))
    ti = np.array([t_index[t] for t in sub["ts"].to_list()], dtype=np.int64)
    ei = np.array([e_index[x] for x in sub["expiry"].to_list()], dtype=np.int64)
    on_grid = np.isclose(grid[ei], sub["strike"].to_numpy()[:, None]) if len(sub) else np.zeros((0, strikes), bool)
    listed = on_grid.any(axis=1)  # a strike off the day's grid is not one of its contracts
    at = (ti[listed], ei[listed], on_grid.argmax(axis=1)[listed], (sub["right"] != "C").to_numpy()[listed].astype(int))
    for name in QUOTE_FIELDS:
        quote[name][at] = sub[name].cast(pl.Float64).fill_null(np.nan).to_numpy()[listed]
    spots = dict(rows.group_by("ts").agg(pl.col("underlying_price").first()).iter_rows())
    spot = fill_forward(np.array([[spots.get(t, np.nan) for t in times]], dtype=np.float64))[0][0]
    settle = [expiry_close(x) for x in exps]
    left = np.maximum(np.array([[(c - t).total_seconds() / 86400.0 for c in settle] for t in times]), 0.0)
    left[-1] = np.where(np.array(exps) == day, 0.0, left[-1])  # same-day expiries settle at the last snapshot
    return {**quote, "strike": grid, "expiry_days": left, "underlying": spot, "ts": times}


def _snapshot_features(features: pl.DataFrame, days: list[date], times: list[list[datetime]],
                       names: Sequence[str]) -> np.ndarray:
    """[D, S, F] features.options values at each day's snapshot times (NaN where the table has none)."""
    import polars as pl

    lacking = [n for n in names if n not in features.columns]
    if lacking:
        raise ValueError(f"features.options rows lack the chosen columns {lacking}; they have {features.columns}")
    out = np.full((len(days), len(times[0]), len(names)), np.nan)
    for d, (day, ts) in enumerate(zip(days, times, strict=True)):
        grid = pl.DataFrame({"ts": pl.Series(ts).cast(features.schema["ts"])})
        rows = grid.join(features.filter(pl.col("trading_day") == day), on="ts", how="left", maintain_order="left")
        out[d] = rows.select(pl.col(n).cast(pl.Float64).fill_null(np.nan) for n in names).to_numpy()
    return out


def chain_tensors_from_snapshots(frame: pl.DataFrame, expiries: int = 3, strikes: int = 9,
                                 features: pl.DataFrame | None = None,
                                 feature_names: Sequence[str] = (),
                                 times: Mapping[date, Sequence[datetime]] | None = None) -> OptionChainTensors:
    """Tensors from `raw.option_snapshots` rows of ONE underlying (any number of trading days).

    Per day the grid is chosen at the first snapshot (see `_day_chain`); every day must have the same number of
    snapshot times. A contract's quote is filled forward from its last snapshot (0 before its first bid and ask of
    the day); it is `quoted` only at the snapshots that have its own bid and ask. `features` (features.options rows of the underlying) give the
    `feature_names` columns at each snapshot, with missing flags. `times` (per day, e.g. the slots of
    `option_slots.align_to_slots`) replace the rows' own snapshot times as the steps of each day.
    """
    import polars as pl

    if frame.is_empty():
        raise ValueError("no option_snapshots rows: fetch or ingest a chain first")
    if frame["underlying"].n_unique() != 1:
        raise ValueError(f"rows of one underlying expected, got {frame['underlying'].unique().to_list()}")
    days = sorted(frame["trading_day"].unique().to_list())
    per_day = [_day_chain(frame.filter(pl.col("trading_day") == day), day, expiries, strikes,
                          times[day] if times is not None else None) for day in days]
    n_snaps = {len(p["underlying"]) for p in per_day}
    if len(n_snaps) != 1:
        raise ValueError(f"days have different snapshot counts {sorted(n_snaps)}; build one tensor per day length")
    stacked = {n: np.stack([p[n] for p in per_day]) for n in per_day[0] if n != "ts"}
    quoted = np.isfinite(stacked["bid"]) & np.isfinite(stacked["ask"])
    ever_quoted = fill_forward(np.where(quoted, 1.0, np.nan))[1]
    for name in QUOTE_FIELDS:
        filled, seen = fill_forward(stacked[name])
        stacked[name] = np.where(ever_quoted & seen, filled, 0.0)
    stacked["mid"] = 0.5 * (stacked["bid"] + stacked["ask"])
    tensors = {n: torch.from_numpy(v) for n, v in stacked.items()}
    if feature_names:
        if features is None:
            raise ValueError("feature_names were given without the features.options rows to read them from")
        values = _snapshot_features(features, days, [p["ts"] for p in per_day], feature_names)
        observed, names = observation_arrays({n: values[..., i:i + 1] for i, n in enumerate(feature_names)})
        tensors["features"] = torch.from_numpy(observed[:, :, 0])
        return OptionChainTensors(**tensors, quoted=torch.from_numpy(quoted), feature_names=names).to("cpu")
    return OptionChainTensors(**tensors, quoted=torch.from_numpy(quoted)).to("cpu")


def synthetic_chain_tensors(days: int = 2, seed: int | None = None, symbol: str = "SYMA", expiries: int = 3,
                            strikes: int = 9, start: str = "2024-07-01",
                            alpha: float | None = None, iv_premium: float | None = None) -> OptionChainTensors:
    """Tensors from the embedded synthetic market's option snapshots for the first `days` trading days from
    `start` (seed None: the market's default seed; alpha None: its default planted signal, 0 a martingale;
    iv_premium None: its default volatility risk premium, 0 fair option prices)."""
    from datetime import timedelta

    import polars as pl

    from pipeline.contract.calendar import trading_days, trading_session
    from pipeline.sources.settings import SourceSettings, build_market_source
    from pipeline.synthetic.config import SyntheticMarketConfig

    first = date.fromisoformat(start)
    sessions = [trading_session(d) for d in trading_days(first, first + timedelta(days=7 * days + 7))][:days]
    chosen = {"seed": seed, "alpha": alpha, "iv_premium": iv_premium}
    config = SyntheticMarketConfig(**{name: value for name, value in chosen.items() if value is not None})
    market = build_market_source(SourceSettings(synthetic=config))
    frame = pl.concat([market.fetch("option_snapshots", s, [symbol]) for s in sessions])
    return chain_tensors_from_snapshots(frame, expiries=expiries, strikes=strikes)
