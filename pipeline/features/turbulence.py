"""Turbulence index: Mahalanobis distance of the cross-asset one-minute return vector from its trailing window.

d_t = (r_t - mu)' (S + ridge * tr(S)/N * I)^-1 (r_t - mu), with mu and S the mean and covariance of the returns
of the `window` minutes before t (t excluded). Null until the window has filled. One value per minute, shared by
every symbol's row at that minute.
"""

from __future__ import annotations

import numpy as np
import polars as pl

TURBULENCE_WINDOW_MIN = 60
TURBULENCE_RIDGE = 1e-2


def turbulence_from_closes(closes: np.ndarray, window: int = TURBULENCE_WINDOW_MIN,
                           ridge: float = TURBULENCE_RIDGE) -> np.ndarray:
    """Turbulence per row of a (minutes, symbols) close matrix (NaN = no price yet); NaN where not defined.

    A missing price counts as no change (return 0): it is what a forward-filled quote would show.
    """
    minutes, n_symbols = closes.shape
    out = np.full(minutes, np.nan)
    if minutes <= window + 1 or n_symbols == 0:
        return out
    with np.errstate(divide="ignore", invalid="ignore"):
        returns = np.log(closes[1:] / closes[:-1])
    returns = np.where(np.isfinite(returns), returns, 0.0)
    # history[k] holds returns[k : k + window]; it is the trailing window of returns[k + window].
    history = np.lib.stride_tricks.sliding_window_view(returns, window, axis=0)[:-1]  # (T', N, window)
    current = returns[window:]
    mean = history.mean(axis=2)
    centered = history - mean[:, :, None]
    cov = np.einsum("tiw,tjw->tij", centered, centered) / (window - 1)
    scale = np.trace(cov, axis1=1, axis2=2) / n_symbols
    # Relative ridge keeps the solve well posed when symbols are collinear or flat.
    shrink = ridge * np.maximum(scale, 1e-16)
    cov = cov + shrink[:, None, None] * np.eye(n_symbols)[None]
    deviation = current - mean
    solved = np.linalg.solve(cov, deviation[:, :, None])[:, :, 0]
    out[window + 1:] = np.einsum("ti,ti->t", deviation, solved)
    return out


def turbulence_index(minute_closes: pl.DataFrame, grid_ts: pl.Series,
                     window: int = TURBULENCE_WINDOW_MIN, ridge: float = TURBULENCE_RIDGE) -> pl.DataFrame:
    """Columns ts, turbulence_index over `grid_ts` from long-format (symbol, ts, close) one-minute rows."""
    wide = (
        pl.DataFrame({"ts": grid_ts})
        .join(minute_closes.pivot(on="symbol", index="ts", values="close", aggregate_function="last"),
              on="ts", how="left")
        .sort("ts")
    )
    symbols = sorted(c for c in wide.columns if c != "ts")
    # Forward-fill inside the grid: a minute without a bar keeps the last price (only the past is used).
    closes = wide.select(pl.col(symbols).forward_fill()).to_numpy().astype(np.float64) if symbols else (
        np.empty((wide.height, 0))
    )
    values = turbulence_from_closes(closes, window=window, ridge=ridge)
    return pl.DataFrame({"ts": wide["ts"], "turbulence_index": values}).with_columns(
        pl.col("turbulence_index").fill_nan(None)
    )
