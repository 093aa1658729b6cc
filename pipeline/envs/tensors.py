"""Market data as device tensors for the batched envs: quotes and features laid out [days, minutes, symbols].

Built ONCE, then kept on the env's device: from the warehouse (`pipeline.envs.warehouse_loader`), from long
frames (`MarketTensors.from_frames`), from arrays (`from_arrays`), or from a synthetic market
(`synthetic_market_tensors`). Every path fills forward only and flags what is missing (`point_in_time`); the
features are the catalog's (docs/FEATURES.md), read from a features table or computed by `pipeline.features`
from the bars (`bar_features`).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from pipeline.envs.bar_features import bar_features, minute_turbulence
from pipeline.envs.frames import (
    DEFAULT_HALF_SPREAD_BPS,
    TURBULENCE_COLUMN,
    frames_to_arrays,
    impute_quotes,
    synthetic_market_frames,
)
from pipeline.envs.point_in_time import UNQUOTED_PRICE, minute_series, observation_arrays
from pipeline.features.catalog import DEFAULT_FEATURES
from pipeline.synthetic.arrays import random_walk_arrays

ArrayLike = np.ndarray | torch.Tensor


def _numpy(x: ArrayLike) -> np.ndarray:
    return x.detach().cpu().numpy() if torch.is_tensor(x) else np.asarray(x)


def _f32(x: ArrayLike, device: torch.device | str) -> torch.Tensor:
    return torch.as_tensor(_numpy(x), dtype=torch.float32, device=device)


def _mask(x: ArrayLike | None, shape: tuple[int, ...], name: str) -> np.ndarray:
    if x is None:
        return np.ones(shape, dtype=bool)
    mask = _numpy(x).astype(bool)
    if mask.shape != shape:
        raise ValueError(f"{name} must be [days, minutes, symbols] = {shape}; got {mask.shape}")
    return mask


@dataclass(frozen=True)
class MarketTensors:
    """Quotes and per-bar features of several trading days, padded to the longest session.

    Bar t of a day ends at its timestamp; `bid`/`ask` are its closing quote. Minutes past a day's
    `session_minutes` repeat the last bar and are never reached by an episode. A day may be one bar (daily data).
    """

    bid: torch.Tensor
    """float32 [days, minutes, symbols]; `UNQUOTED_PRICE` where not `tradable`."""
    ask: torch.Tensor
    """float32 [days, minutes, symbols]; `UNQUOTED_PRICE` where not `tradable`."""
    features: torch.Tensor
    """float32 [days, minutes, symbols, features]: what the agent sees of each bar (values, then missing flags)."""
    turbulence: torch.Tensor
    """float32 [days, minutes]: the risk-off trigger, the catalog's turbulence_index (0 until defined)."""
    session_minutes: torch.Tensor
    """int64 [days]: bars in each day's session (early closes are shorter)."""
    tradable: torch.Tensor
    """bool [days, minutes, symbols]: a quote (or, for bar-only symbols, a bar) has been seen this day at or
    before the bar; an order may only be filled on a tradable bar."""
    quoted: torch.Tensor
    """bool [days, minutes, symbols]: bid/ask are a real quote, not close -+ a default half-spread (bar-only)."""
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
            tradable=self.tradable.to(device),
            quoted=self.quoted.to(device),
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
            tradable=self.tradable[d][:, :, s],
            quoted=self.quoted[d][:, :, s],
            symbols=tuple(self.symbols[i] for i in s),
            trading_days=tuple(self.trading_days[i] for i in d),
        )

    @classmethod
    def from_arrays(
        cls,
        bid: ArrayLike,
        ask: ArrayLike,
        *,
        close: ArrayLike | None = None,
        high: ArrayLike | None = None,
        low: ArrayLike | None = None,
        volume: ArrayLike | None = None,
        session_minutes: Sequence[int] | None = None,
        features: ArrayLike | None = None,
        feature_names: Sequence[str] | None = None,
        turbulence: ArrayLike | None = None,
        tradable: ArrayLike | None = None,
        quoted: ArrayLike | None = None,
        symbols: Sequence[str] | None = None,
        trading_days: Sequence[str] | None = None,
        device: torch.device | str = "cpu",
    ) -> MarketTensors:
        """Build from [days, minutes, symbols] arrays of one-minute (or daily: one bar a day) bars.

        Without `features`, the catalog's `DEFAULT_FEATURES` are computed from close (default: the mid), bid/ask,
        high/low and volume by `pipeline.features` (`bar_features`: each day on its own), each with its
        `<name>_missing` flag; given `features` must be finite (fill them with `point_in_time.observation_arrays`).
        Without `turbulence`, the turbulence index of the closes. `tradable` and `quoted` default to every bar;
        bid/ask need only be valid where tradable.
        """
        bid_np, ask_np = _numpy(bid).astype(np.float64), _numpy(ask).astype(np.float64)
        if bid_np.ndim != 3 or ask_np.shape != bid_np.shape:
            raise ValueError(
                f"bid and ask must both be [days, minutes, symbols]; got {bid_np.shape} and {ask_np.shape}. "
                "Add the missing axes (e.g. arr[None, :, None] for one day of one symbol)."
            )
        shape = bid_np.shape
        can_trade = _mask(tradable, shape, "tradable")
        with np.errstate(invalid="ignore"):
            if not (np.isfinite(bid_np) & np.isfinite(ask_np))[can_trade].all():
                raise ValueError(
                    "bid/ask contain NaN or inf on a tradable bar; forward-fill missing quotes within the day or "
                    "mark those bars untradable (tradable=False)"
                )
            if ((bid_np <= 0) | (ask_np < bid_np))[can_trade].any():
                raise ValueError("quotes must satisfy 0 < bid <= ask on every tradable bar; drop or repair them")
        days, minutes, n_sym = shape
        sessions = np.asarray([minutes] * days if session_minutes is None else list(session_minutes))
        if sessions.shape != (days,) or (sessions < 1).any() or (sessions > minutes).any():
            raise ValueError(f"session_minutes must be {days} values in [1, {minutes}]; got {sessions.tolist()}")
        price = np.where(can_trade, _numpy(close) if close is not None else (bid_np + ask_np) / 2, np.nan)
        if features is None:
            columns = bar_features(
                price, np.where(can_trade, bid_np, np.nan), np.where(can_trade, ask_np, np.nan),
                *(None if a is None else _numpy(a) for a in (high, low, volume)),
            )
            feats, names = observation_arrays(columns)
            turb = minute_series(columns[TURBULENCE_COLUMN]) if turbulence is None else _numpy(turbulence)
        else:
            feats = _numpy(features)
            names = tuple(feature_names) if feature_names is not None else tuple(f"f{i}" for i in range(feats.shape[-1]))
            if feats.shape[:3] != shape or len(names) != feats.shape[-1]:
                raise ValueError(
                    f"features must be [days, minutes, symbols, F] = {shape} + (F,) with F names; "
                    f"got {feats.shape} and {len(names)} names"
                )
            turb = minute_series(minute_turbulence(price)[..., None]) if turbulence is None else _numpy(turbulence)
        if not (np.isfinite(feats).all() and np.isfinite(turb).all()):
            raise ValueError(
                "features/turbulence contain NaN or inf; a missing value is 0 with a missing flag: build them with "
                "pipeline.envs.point_in_time.observation_arrays"
            )
        return cls(
            bid=_f32(np.where(can_trade, bid_np, UNQUOTED_PRICE), device),
            ask=_f32(np.where(can_trade, ask_np, UNQUOTED_PRICE), device),
            features=_f32(feats, device),
            turbulence=_f32(turb, device),
            session_minutes=torch.as_tensor(sessions, dtype=torch.int64, device=device),
            tradable=torch.as_tensor(can_trade, device=device),
            quoted=torch.as_tensor(_mask(quoted, shape, "quoted") & can_trade, device=device),
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
        features: Sequence[str] | None = None,
        half_spread_bps: float = DEFAULT_HALF_SPREAD_BPS,
        device: torch.device | str = "cpu",
    ) -> MarketTensors:
        """Build from a polars bars frame [symbol, ts (bar end), (trading_day), close or bid/ask, high, low, volume].

        Days are the frame's `trading_day` (default: the New York date of ts); bars are each day's distinct ts.
        Without bid/ask columns the quote is close -+ `half_spread_bps` (`quoted` False). With a `features_frame`
        [symbol, ts, ...] (e.g. features.market rows) its `features` columns (default: every numeric one) are the
        observation and its `turbulence_index`, if any, drives risk-off; without it, `from_arrays` computes the
        default features from the bars. Either way gaps are filled forward only, with missing flags.
        """
        prices = impute_quotes(bars_frame, half_spread_bps)
        arrays = frames_to_arrays(prices, features_frame, features)
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

    `source="numpy"` is the fast arrays of `pipeline.synthetic.arrays` (same signal and spread model as
    SyntheticMarket, `minutes` bars a day, all drawn at once; features by `pipeline.features`, each day on its own);
    `"market"` the embedded SyntheticMarket on the first `days` XNYS sessions from `start`, its ticks turned into
    bars and features by `pipeline.features` and pivoted like the warehouse loader does; `"auto"` the embedded one
    where exchange_calendars is installed, else the arrays.
    """
    if days < 1 or minutes < 1 or not symbols:
        raise ValueError(
            f"need days >= 1, minutes >= 1 and at least one symbol; got {days}, {minutes}, {symbols}"
        )
    if source == "auto":
        source = "market" if embedded_market_available() else "numpy"
    if source == "market":
        bars, features = synthetic_market_frames(days, alpha, seed, tuple(symbols), start)
        arrays = frames_to_arrays(impute_quotes(bars), features, DEFAULT_FEATURES, symbols=tuple(symbols))
        return MarketTensors.from_arrays(**arrays, device=device)
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
    "DEFAULT_FEATURES",
    "DEFAULT_HALF_SPREAD_BPS",
    "TURBULENCE_COLUMN",
    "UNQUOTED_PRICE",
    "MarketTensors",
    "embedded_market_available",
    "random_walk_arrays",
    "synthetic_market_tensors",
]
