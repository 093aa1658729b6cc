"""Market data as device tensors for the batched envs: quotes and features laid out [days, minutes, symbols].

Built ONCE from a bars frame (`MarketTensors.from_frames`), from arrays (`from_arrays`), or from a synthetic
market (`synthetic_market_tensors`), then kept on the env's device. polars is imported only inside the frame
builders, so the GPU path needs nothing beyond torch and numpy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

ArrayLike = np.ndarray | torch.Tensor

# Trailing windows (in bars) of the computed features.
RETURN_LAGS = (1, 5, 15)
VOLUME_WINDOW = 30
TURBULENCE_WINDOW = 60
TURBULENCE_MIN_BARS = 10
# Columns of an external features frame read as the turbulence index (features.market names it turbulence_index).
TURBULENCE_COLUMNS = ("turbulence_index", "turbulence")


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
        arrays = _frames_to_arrays(bars_frame, features_frame, default_spread_bps=default_spread_bps)
        return cls.from_arrays(**arrays, device=device)


def random_walk_arrays(
    days: int, minutes: int, n_symbols: int, alpha: float, seed: int
) -> dict[str, np.ndarray]:
    """Numpy factor-model random walk with U-shaped volatility, cent quotes and a planted MA(1) component.

    Log-returns are r_t = e_t + alpha * e_{t-1}: the previous bar's innovation predicts the next return, so the
    lag-1 return autocorrelation is alpha / (1 + alpha^2); alpha = 0 is a martingale.
    """
    rng = np.random.default_rng(seed)
    tod = (np.arange(minutes) + 0.5) / minutes
    u_shape = 1.0 + 2.0 * (2.0 * tod - 1.0) ** 2
    sigma = 4e-4 * u_shape / u_shape.mean()
    beta = rng.uniform(0.5, 1.2, n_symbols)
    factor = rng.standard_normal((days, minutes, 1))
    z = (beta * factor + rng.standard_normal((days, minutes, n_symbols))) / np.sqrt(beta**2 + 1.0)
    innov = sigma[None, :, None] * z
    ret = innov.copy()
    ret[:, 1:] += alpha * innov[:, :-1]
    start = np.log(rng.uniform(40.0, 200.0, n_symbols))
    mid = np.exp(start + np.cumsum(ret.reshape(days * minutes, n_symbols), axis=0)).reshape(ret.shape)
    spread_bps = 1.0 + 1.5 * u_shape[None, :, None] * rng.exponential(1.0, ret.shape)
    half = mid * spread_bps * 0.5e-4
    bid = np.floor((mid - half) * 100.0) / 100.0
    ask = np.maximum(np.ceil((mid + half) * 100.0) / 100.0, bid + 0.01)
    wiggle = np.abs(rng.standard_normal((2, *ret.shape))) * sigma[None, None, :, None] * 0.7
    return {
        "bid": bid,
        "ask": ask,
        "high": mid * np.exp(wiggle[0]),
        "low": mid * np.exp(-wiggle[1]),
        "volume": rng.lognormal(np.log(2000.0 * u_shape)[None, :, None], 0.5, ret.shape).round(),
    }


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
    """A small synthetic market with a planted predictable component of strength `alpha` (0: a martingale).

    `source="numpy"` is a fast numpy random walk (`random_walk_arrays`; `minutes` bars a day); `"market"` the
    embedded SyntheticMarket on the first `days` XNYS sessions from `start` (needs polars).
    """
    if days < 1 or minutes < 2 or not symbols:
        raise ValueError(
            f"need days >= 1, minutes >= 2 and at least one symbol; got {days}, {minutes}, {symbols}"
        )
    if source == "market":
        bars = _synthetic_market_bars(days, alpha, seed, tuple(symbols), start)
        return MarketTensors.from_frames(bars, device=device)
    if source != "numpy":
        raise ValueError(f"source must be 'numpy' or 'market'; got {source!r}")
    arrays = random_walk_arrays(days=days, minutes=minutes, n_symbols=len(symbols), alpha=alpha, seed=seed)
    return MarketTensors.from_arrays(
        **arrays,
        symbols=tuple(symbols),
        trading_days=tuple(f"synthetic{i}" for i in range(days)),
        device=device,
    )


def _fill_along_minutes(a: np.ndarray) -> np.ndarray:
    """Forward-fill NaNs along axis 1 ([days, minutes, ...]), then back-fill the leading ones."""
    pos = np.arange(a.shape[1]).reshape(1, -1, *([1] * (a.ndim - 2)))
    idx = np.maximum.accumulate(np.where(np.isnan(a), 0, pos), axis=1)
    out = np.take_along_axis(a, idx, axis=1)
    idx = np.minimum.accumulate(np.where(np.isnan(out), a.shape[1] - 1, pos)[:, ::-1], axis=1)[:, ::-1]
    return np.take_along_axis(out, idx, axis=1)


def _frames_to_arrays(bars: Any, features_frame: Any | None, default_spread_bps: float) -> dict[str, Any]:
    """Pivot long polars frames into the [days, minutes, symbols(, features)] numpy arrays of `from_arrays`."""
    import polars as pl

    missing = [c for c in ("symbol", "ts", "close") if c not in bars.columns]
    if missing:
        raise ValueError(
            f"bars frame lacks columns {missing}; it needs symbol, ts, close (+ high, low, volume, bid, ask)"
        )
    if bars.is_empty():
        raise ValueError("bars frame is empty: materialize the bars of at least one trading day first")
    if bars.schema["ts"].time_zone is None:  # naive timestamps are taken as UTC, as in the raw tables
        bars = bars.with_columns(pl.col("ts").dt.replace_time_zone("UTC"))
    if "trading_day" not in bars.columns:
        bars = bars.with_columns(trading_day=pl.col("ts").dt.convert_time_zone("America/New_York").dt.date())
    bars = bars.with_columns(
        _d=pl.col("trading_day").rank("dense") - 1,
        _m=pl.col("ts").rank("dense").over("trading_day") - 1,
        _s=pl.col("symbol").rank("dense") - 1,
    )
    d, m, s = (bars[c].to_numpy().astype(np.int64) for c in ("_d", "_m", "_s"))
    shape = (int(d.max()) + 1, int(m.max()) + 1, int(s.max()) + 1)

    def pivot(values: np.ndarray) -> np.ndarray:
        out = np.full(shape + values.shape[1:], np.nan)
        out[d, m, s] = values
        return _fill_along_minutes(out)

    arrays: dict[str, Any] = {
        c: pivot(bars[c].cast(pl.Float64).to_numpy())
        for c in ("close", "high", "low", "volume")
        if c in bars.columns
    }
    close = arrays.pop("close")
    if {"bid", "ask"} <= set(bars.columns):
        arrays["bid"], arrays["ask"] = (pivot(bars[c].cast(pl.Float64).to_numpy()) for c in ("bid", "ask"))
    else:
        arrays["bid"], arrays["ask"] = (
            close * (1 - default_spread_bps * 0.5e-4),
            close * (1 + default_spread_bps * 0.5e-4),
        )
    if np.isnan(arrays["bid"]).any():
        raise ValueError(
            "some symbol has no bar on a whole trading day; drop that day or symbol from the frame"
        )
    keys = bars.select("_d", "_m").group_by("_d").agg(pl.col("_m").max()).sort("_d")
    arrays["session_minutes"] = (keys["_m"].to_numpy() + 1).tolist()
    arrays["symbols"] = tuple(bars.select("symbol", "_s").unique().sort("_s")["symbol"].to_list())
    arrays["trading_days"] = tuple(
        str(x) for x in bars.select("trading_day", "_d").unique().sort("_d")["trading_day"]
    )
    if features_frame is not None:
        arrays.update(_pivot_features(bars, features_frame, pivot))
    return arrays


def _pivot_features(bars: Any, features_frame: Any, pivot: Any) -> dict[str, Any]:
    import polars as pl

    if features_frame.schema["ts"].time_zone is None:
        features_frame = features_frame.with_columns(pl.col("ts").dt.replace_time_zone("UTC"))
    names = [
        c
        for c, t in features_frame.schema.items()
        if t.is_numeric() and c not in ("symbol", "ts", "trading_day")
    ]
    if not names:
        raise ValueError("features frame has no numeric feature columns besides symbol/ts/trading_day")
    joined = bars.select("symbol", "ts").join(
        features_frame.select("symbol", pl.col("ts").dt.convert_time_zone("UTC"), *names),
        on=["symbol", "ts"],
        how="left",
        maintain_order="left",
    )
    feats = np.nan_to_num(pivot(joined.select(pl.col(names).cast(pl.Float64)).to_numpy()))
    out: dict[str, Any] = {"features": feats, "feature_names": tuple(names)}
    column = next((c for c in TURBULENCE_COLUMNS if c in names), None)
    if column is not None:
        out["turbulence"] = feats[..., names.index(column)].mean(axis=-1)
    return out


def _synthetic_market_bars(days: int, alpha: float, seed: int, symbols: tuple[str, ...], start: str) -> Any:
    """Minute bars of the embedded SyntheticMarket on `days` consecutive XNYS sessions from `start`."""
    from datetime import date, timedelta

    import polars as pl

    from pipeline.market.calendar import trading_days, trading_session
    from pipeline.market.synthetic import SyntheticMarket, SyntheticMarketConfig

    first = date.fromisoformat(start)
    sessions = trading_days(first, first + timedelta(days=2 * days + 10))[:days]
    market = SyntheticMarket(SyntheticMarketConfig(seed=seed, alpha=alpha))
    return pl.concat([market.minute_bars(trading_session(day), symbols) for day in sessions])
