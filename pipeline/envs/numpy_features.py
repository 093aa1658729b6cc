"""The numpy backend of the catalog features the envs observe by default (torch + numpy only, for the GPU path).

`pipeline.features` (polars) defines every feature of `features.market`; this module computes the few in
`DEFAULT_FEATURES` with numpy, for the numpy synthetic market and `MarketTensors.from_arrays`, where polars may be
absent. Same names, windows and formulas as docs/FEATURES.md, on one-minute bars, NaN where polars gives null, but
one trading day at a time: it has no lookback, so it equals `pipeline.features.market_features` of a day computed
without history (held equal by tests/test_env_market_data.py), and its windows refill after each open where the
warehouse's reach into the session before.
"""

from __future__ import annotations

import numpy as np

DEFAULT_FEATURES: tuple[str, ...] = (
    "log_return_1m",
    "log_return_5m",
    "log_return_15m",
    "relative_spread_bps",
    "bar_range_bps",
    "volume_zscore_30m",
    "turbulence_index",
)
"""A copy of `pipeline.features.catalog.DEFAULT_FEATURES` for the polars-free path (held equal by a test)."""


RETURN_HORIZONS = (1, 5, 15)
VOLUME_WINDOW = 30
TURBULENCE_WINDOW = 60
TURBULENCE_RIDGE = 1e-2


def _lagged_log_return(close: np.ndarray, lag: int) -> np.ndarray:
    out = np.full_like(close, np.nan)
    out[:, lag:] = np.log(close[:, lag:] / close[:, :-lag])
    return out


def _rolling_zscore(x: np.ndarray, window: int) -> np.ndarray:
    """(x - mean) / std (ddof 1) over the trailing `window` rows including the current one; NaN until full."""
    out = np.full_like(x, np.nan)
    if x.shape[1] < window:
        return out
    windows = np.lib.stride_tricks.sliding_window_view(x, window, axis=1)  # [D, M - window + 1, S, window]
    out[:, window - 1:] = (x[:, window - 1:] - windows.mean(axis=-1)) / windows.std(axis=-1, ddof=1)
    return out


def turbulence_index(close: np.ndarray, window: int = TURBULENCE_WINDOW, ridge: float = TURBULENCE_RIDGE) -> np.ndarray:
    """[days, minutes]: (r_t - mu)' (S + ridge tr(S)/N I)^-1 (r_t - mu) of the cross-asset one-minute log returns,
    mu and S over the `window` returns before t; NaN until the window has filled (minute window + 1)."""
    days, minutes, n_symbols = close.shape
    out = np.full((days, minutes), np.nan)
    if minutes <= window + 1 or n_symbols == 0:
        return out
    with np.errstate(divide="ignore", invalid="ignore"):
        returns = np.log(close[:, 1:] / close[:, :-1])
    returns = np.where(np.isfinite(returns), returns, 0.0)  # a missing price counts as no change
    history = np.lib.stride_tricks.sliding_window_view(returns, window, axis=1)[:, :-1]  # [D, T, S, window]
    current = returns[:, window:]
    mean = history.mean(axis=-1)
    centered = history - mean[..., None]
    cov = np.einsum("dtiw,dtjw->dtij", centered, centered) / (window - 1)
    shrink = ridge * np.maximum(np.trace(cov, axis1=-2, axis2=-1) / n_symbols, 1e-16)
    cov = cov + shrink[..., None, None] * np.eye(n_symbols)
    deviation = current - mean
    solved = np.linalg.solve(cov, deviation[..., None])[..., 0]
    out[:, window + 1:] = np.einsum("dti,dti->dt", deviation, solved)
    return out


def default_features_numpy(
    close: np.ndarray,
    bid: np.ndarray,
    ask: np.ndarray,
    high: np.ndarray | None = None,
    low: np.ndarray | None = None,
    volume: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """`DEFAULT_FEATURES` from [days, minutes, symbols] one-minute bars, each day on its own (NaN = null).

    The spread is that of the closing quote (one quote per bar); without high/low or volume the features built from
    them are NaN throughout (missing, flagged by the caller), never a made-up 0.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        return _default_features(close, bid, ask, high, low, volume)


def _default_features(
    close: np.ndarray, bid: np.ndarray, ask: np.ndarray, high: np.ndarray | None, low: np.ndarray | None,
    volume: np.ndarray | None,
) -> dict[str, np.ndarray]:
    close, bid, ask = (np.asarray(a, dtype=np.float64) for a in (close, bid, ask))
    unknown = np.full_like(close, np.nan)
    columns = {f"log_return_{h}m": _lagged_log_return(close, h) for h in RETURN_HORIZONS}
    columns["relative_spread_bps"] = 1e4 * (ask - bid) / ((ask + bid) / 2.0)
    columns["bar_range_bps"] = (
        unknown if high is None or low is None else 1e4 * (np.asarray(high) - np.asarray(low)) / close
    )
    columns["volume_zscore_30m"] = (
        unknown if volume is None else _rolling_zscore(np.asarray(volume, dtype=np.float64), VOLUME_WINDOW)
    )
    turbulence = turbulence_index(close)
    columns["turbulence_index"] = np.broadcast_to(turbulence[..., None], close.shape).copy()
    return {name: np.where(np.isfinite(v), v, np.nan) for name, v in columns.items()}
