"""Market data as device tensors for the batched envs: quotes and features laid out [days, minutes, symbols].

Built ONCE from a bars frame (`MarketTensors.from_frames`, via `market_frames`), from arrays (`from_arrays`), or
from a synthetic market (`synthetic_market_tensors`: the numpy one of `synthetic_walk`, or the embedded
SyntheticMarket), then kept on the env's device. polars is imported only inside the frame builders, so the GPU
path needs nothing beyond torch and numpy.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from pipeline.envs.market_frames import TURBULENCE_COLUMNS, frames_to_arrays, synthetic_market_bars
from pipeline.envs.synthetic_walk import random_walk_arrays

ArrayLike = np.ndarray | torch.Tensor

# Trailing windows (in bars) of the computed features.
RETURN_LAGS = (1, 5, 15)
VOLUME_WINDOW = 30
TURBULENCE_WINDOW = 60
TURBULENCE_MIN_BARS = 10


def _f32(x: ArrayLike, device: torch.device | str) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x, dtype=torch.float32, device=device)


def _trailing_sums(x: torch.Tensor, window: int, include_current: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Sums of x[:, s] over the trailing window ending at (or just before) each t, and the bar counts, per day."""
    minutes = x.shape[1]
    csum = torch.cat([torch.zeros_like(x[:, :1]), x.cumsum(dim=1)], dim=1)
    t = torch.arange(minutes, device=x.device)
    end = t + 1 if include_current else t
    start = (end - window).clamp(min=0)
    count = (end - start).to(x.dtype).view(1, minutes, *([1] * (x.ndim - 2)))
    return csum[:, end] - csum[:, start], count


def compute_market_features(
    bid: torch.Tensor,
    ask: torch.Tensor,
    high: torch.Tensor | None = None,
    low: torch.Tensor | None = None,
    volume: torch.Tensor | None = None,
) -> tuple[torch.Tensor, tuple[str, ...], torch.Tensor]:
    """Per-bar features from [days, minutes, symbols] quotes, causal within each day.

    Returns (features [D, M, S, F], names, turbulence [D, M]). Returns and ranges are in basis points; the
    turbulence index is the squared Mahalanobis distance of this bar's cross-asset returns from the trailing
    `TURBULENCE_WINDOW` bars (0 until `TURBULENCE_MIN_BARS` bars are available).
    """
    mid = (bid + ask) * 0.5
    log_mid = mid.double().log()
    minutes = mid.shape[1]
    t = torch.arange(minutes, device=mid.device)
    cols: dict[str, torch.Tensor] = {}
    for lag in RETURN_LAGS:
        cols[f"ret_{lag}"] = ((log_mid - log_mid[:, (t - lag).clamp(min=0)]) * 1e4).float()
    cols["spread_bps"] = (ask - bid) / mid * 1e4
    cols["range_bps"] = (
        (high - low) / mid * 1e4 if high is not None and low is not None else cols["ret_1"].abs()
    )
    if volume is None:
        cols["volume_z"] = torch.zeros_like(mid)
    else:
        log_vol = volume.double().clamp(min=0).log1p()
        s1, n = _trailing_sums(log_vol, VOLUME_WINDOW, include_current=True)
        s2, _ = _trailing_sums(log_vol**2, VOLUME_WINDOW, include_current=True)
        mean = s1 / n
        cols["volume_z"] = ((log_vol - mean) / ((s2 / n - mean**2).clamp(min=0) + 1e-6).sqrt()).float()
    turbulence = _turbulence(cols["ret_1"].double())
    cols["turbulence"] = turbulence.unsqueeze(-1).expand_as(mid)
    return torch.stack(list(cols.values()), dim=-1), tuple(cols), turbulence


def _turbulence(ret: torch.Tensor) -> torch.Tensor:
    """Squared Mahalanobis distance of ret[:, t] from the mean/cov of the trailing window before t."""
    n_sym = ret.shape[-1]
    s1, n = _trailing_sums(ret, TURBULENCE_WINDOW, include_current=False)
    s2, _ = _trailing_sums(ret.unsqueeze(-1) * ret.unsqueeze(-2), TURBULENCE_WINDOW, include_current=False)
    count = n.view(1, -1, 1)
    mean = s1 / count.clamp(min=1)
    cov = s2 / count.clamp(min=1).unsqueeze(-1) - mean.unsqueeze(-1) * mean.unsqueeze(-2)
    # Ridge keeps the covariance invertible when the window is short or assets move together.
    ridge = cov.diagonal(dim1=-2, dim2=-1).mean(-1).clamp(min=1e-6) * 1e-3 + 1e-6
    cov = cov + ridge[..., None, None] * torch.eye(n_sym, dtype=ret.dtype, device=ret.device)
    diff = ret - mean
    dist = (diff * torch.linalg.solve(cov, diff.unsqueeze(-1)).squeeze(-1)).sum(-1)
    return torch.where(n.view(1, -1) >= TURBULENCE_MIN_BARS, dist, torch.zeros_like(dist)).float()


@dataclass(frozen=True)
class MarketTensors:
    """Quotes and per-bar features of several trading days, padded to the longest session.

    Bar t of a day ends at its timestamp; `bid`/`ask` are its closing quote. Minutes past a day's
    `session_minutes` repeat the last bar and are never reached by an episode.
    """

    bid: torch.Tensor
    """float32 [days, minutes, symbols]."""
    ask: torch.Tensor
    """float32 [days, minutes, symbols]."""
    features: torch.Tensor
    """float32 [days, minutes, symbols, features]: what the agent sees of each bar."""
    turbulence: torch.Tensor
    """float32 [days, minutes]: the risk-off trigger (see `compute_market_features`)."""
    session_minutes: torch.Tensor
    """int64 [days]: bars in each day's session (early closes are shorter)."""
    feature_names: tuple[str, ...]
    symbols: tuple[str, ...]
    trading_days: tuple[str, ...]

    @property
    def mid(self) -> torch.Tensor:
        """float32 [days, minutes, symbols]: quote midpoint, the mark-to-market price."""
        return (self.bid + self.ask) * 0.5

    @property
    def num_days(self) -> int:
        return self.bid.shape[0]

    @property
    def num_minutes(self) -> int:
        return self.bid.shape[1]

    @property
    def num_symbols(self) -> int:
        return self.bid.shape[2]

    @property
    def num_features(self) -> int:
        return self.features.shape[-1]

    @property
    def device(self) -> torch.device:
        return self.bid.device

    def to(self, device: torch.device | str) -> MarketTensors:
        """A copy with every tensor on `device`."""
        return replace(
            self,
            bid=self.bid.to(device),
            ask=self.ask.to(device),
            features=self.features.to(device),
            turbulence=self.turbulence.to(device),
            session_minutes=self.session_minutes.to(device),
        )

    def subset(
        self, days: Sequence[int] | None = None, symbols: Sequence[int] | None = None
    ) -> MarketTensors:
        """The same data restricted to some day and symbol indices (features are kept as computed)."""
        d = list(range(self.num_days)) if days is None else [int(i) for i in days]
        s = list(range(self.num_symbols)) if symbols is None else [int(i) for i in symbols]
        return replace(
            self,
            bid=self.bid[d][:, :, s],
            ask=self.ask[d][:, :, s],
            features=self.features[d][:, :, s],
            turbulence=self.turbulence[d],
            session_minutes=self.session_minutes[d],
            symbols=tuple(self.symbols[i] for i in s),
            trading_days=tuple(self.trading_days[i] for i in d),
        )

    @classmethod
    def from_arrays(
        cls,
        bid: ArrayLike,
        ask: ArrayLike,
        *,
        high: ArrayLike | None = None,
        low: ArrayLike | None = None,
        volume: ArrayLike | None = None,
        session_minutes: Sequence[int] | None = None,
        features: ArrayLike | None = None,
        feature_names: Sequence[str] | None = None,
        turbulence: ArrayLike | None = None,
        symbols: Sequence[str] | None = None,
        trading_days: Sequence[str] | None = None,
        device: torch.device | str = "cpu",
    ) -> MarketTensors:
        """Build from [days, minutes, symbols] arrays; features are computed in torch unless given."""
        bid_t, ask_t = _f32(bid, device), _f32(ask, device)
        if bid_t.ndim != 3 or ask_t.shape != bid_t.shape:
            raise ValueError(
                f"bid and ask must both be [days, minutes, symbols]; got {tuple(bid_t.shape)} and "
                f"{tuple(ask_t.shape)}. Add the missing axes (e.g. arr[None, :, None] for one day of one symbol)."
            )
        if not bool(torch.isfinite(bid_t).all() and torch.isfinite(ask_t).all()):
            raise ValueError(
                "bid/ask contain NaN or inf; forward-fill missing quotes before building MarketTensors"
            )
        if bool((bid_t <= 0).any()) or bool((ask_t < bid_t).any()):
            raise ValueError(
                "quotes must satisfy 0 < bid <= ask on every bar; drop or repair the crossed quotes"
            )
        days, minutes, n_sym = bid_t.shape
        sessions = torch.as_tensor(
            [minutes] * days if session_minutes is None else list(session_minutes),
            dtype=torch.int64,
            device=device,
        )
        if sessions.shape != (days,) or bool((sessions < 2).any()) or bool((sessions > minutes).any()):
            raise ValueError(
                f"session_minutes must be {days} values in [2, {minutes}]; got {sessions.tolist()}"
            )
        if features is None or turbulence is None:  # given features and turbulence need no computing
            optional = [None if a is None else _f32(a, device) for a in (high, low, volume)]
            feats, names, turb = compute_market_features(bid_t, ask_t, *optional)
        if features is not None:
            feats = _f32(features, device)
            names = (
                tuple(feature_names)
                if feature_names is not None
                else tuple(f"f{i}" for i in range(feats.shape[-1]))
            )
            if feats.shape[:3] != bid_t.shape or len(names) != feats.shape[-1]:
                raise ValueError(
                    f"features must be [days, minutes, symbols, F] = {tuple(bid_t.shape)} + (F,) with F names; "
                    f"got {tuple(feats.shape)} and {len(names)} names"
                )
        if turbulence is not None:
            turb = _f32(turbulence, device)
        return cls(
            bid=bid_t,
            ask=ask_t,
            features=torch.nan_to_num(feats),
            turbulence=torch.nan_to_num(turb),
            session_minutes=sessions,
            feature_names=tuple(names),
            symbols=tuple(symbols) if symbols is not None else tuple(f"S{i}" for i in range(n_sym)),
            trading_days=tuple(trading_days)
            if trading_days is not None
            else tuple(f"day{i}" for i in range(days)),
        )

    @classmethod
    def from_frames(
        cls,
        bars_frame: Any,
        features_frame: Any | None = None,
        *,
        default_spread_bps: float = 2.0,
        device: torch.device | str = "cpu",
    ) -> MarketTensors:
        """Build from a polars bars frame [symbol, ts, open, high, low, close, volume, (bid, ask), ...].

        Days are New York trading days (or the frame's `trading_day` column); bars missing for a symbol are
        forward-filled. Without bid/ask columns the quote is close -+ `default_spread_bps`/2. With a
        `features_frame` [symbol, ts, <numeric feature columns>] (e.g. features.market) its columns are the
        features, and its `turbulence_index` (or `turbulence`) column, if any, drives risk-off.
        """
        arrays = frames_to_arrays(bars_frame, features_frame, default_spread_bps=default_spread_bps)
        return cls.from_arrays(**arrays, device=device)


def embedded_market_available() -> bool:
    """Whether the embedded SyntheticMarket can be built here (it needs polars and exchange_calendars)."""
    return all(importlib.util.find_spec(name) is not None for name in ("polars", "exchange_calendars"))


def synthetic_market_tensors(
    days: int = 5,
    alpha: float = 0.1,
    seed: int = 0,
    symbols: Sequence[str] = ("AAA", "BBB", "CCC"),
    *,
    minutes: int = 390,
    start: str = "2024-07-01",
    source: str = "numpy",
    device: torch.device | str = "cpu",
) -> MarketTensors:
    """A small synthetic market with the planted momentum signal of strength `alpha` (0: a martingale).

    `source="numpy"` is the fast numpy market of `synthetic_walk` (same signal and spread model as SyntheticMarket,
    `minutes` bars a day, no polars); `"market"` the embedded SyntheticMarket on the first `days` XNYS sessions
    from `start` (needs polars and exchange_calendars); `"auto"` the embedded one where those are installed,
    else the numpy one (e.g. on a GPU machine with torch and numpy only).
    """
    if days < 1 or minutes < 2 or not symbols:
        raise ValueError(
            f"need days >= 1, minutes >= 2 and at least one symbol; got {days}, {minutes}, {symbols}"
        )
    if source == "auto":
        source = "market" if embedded_market_available() else "numpy"
    if source == "market":
        bars = synthetic_market_bars(days, alpha, seed, tuple(symbols), start)
        return MarketTensors.from_frames(bars, device=device)
    if source != "numpy":
        raise ValueError(f"source must be 'numpy', 'market' or 'auto'; got {source!r}")
    arrays = random_walk_arrays(days=days, minutes=minutes, n_symbols=len(symbols), alpha=alpha, seed=seed)
    return MarketTensors.from_arrays(
        **arrays,
        symbols=tuple(symbols),
        trading_days=tuple(f"synthetic{i}" for i in range(days)),
        device=device,
    )


__all__ = [
    "RETURN_LAGS",
    "TURBULENCE_COLUMNS",
    "TURBULENCE_MIN_BARS",
    "TURBULENCE_WINDOW",
    "VOLUME_WINDOW",
    "MarketTensors",
    "compute_market_features",
    "embedded_market_available",
    "random_walk_arrays",
    "synthetic_market_tensors",
]
