"""Turbulence indices: Mahalanobis distance of the cross-asset return vector from its trailing window.

d_t = (r_t - mu)' (S + ridge * tr(S)/N * I)^-1 (r_t - mu), with mu and S the mean and covariance of the returns
of the window before t (t excluded). Null until the window has filled. One value per ts, shared by every symbol's
row at that ts. The minute index uses the one-minute returns of the session; the daily one (FinRL's) uses daily
returns of the trailing sessions, with r_t the return from the previous close to the price at ts.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

import numpy as np
import polars as pl

from pipeline.features.daily import daily_close_matrix

TURBULENCE_WINDOW_MIN = 60
TURBULENCE_RIDGE = 1e-2
DAILY_TURBULENCE_WINDOW_DAYS = 252  # FinRL's one trading year


def mahalanobis(history: np.ndarray, current: np.ndarray, ridge: float = TURBULENCE_RIDGE) -> np.ndarray:
    """Squared distance of each current[..., t] (N,) from the window history[..., t] (N, W) of N symbols' returns
    (a history of one window, shape (1, N, W), serves every t; leading axes batch independent series)."""
    n_symbols, window = history.shape[-2], history.shape[-1]
    mean = history.mean(axis=-1)
    centered = history - mean[..., None]
    cov = np.einsum("...iw,...jw->...ij", centered, centered) / (window - 1)
    scale = np.trace(cov, axis1=-2, axis2=-1) / n_symbols
    # Relative ridge keeps the solve well posed when symbols are collinear or flat.
    shrink = ridge * np.maximum(scale, 1e-16)
    cov = cov + shrink[..., None, None] * np.eye(n_symbols)
    deviation = current - mean
    solved = np.linalg.solve(cov, deviation[..., None])[..., 0]
    return np.einsum("...i,...i->...", deviation, solved)


def turbulence_from_closes(closes: np.ndarray, window: int = TURBULENCE_WINDOW_MIN,
                           ridge: float = TURBULENCE_RIDGE) -> np.ndarray:
    """Turbulence per row of a (minutes, symbols) close matrix (NaN = no price yet); NaN where not defined.

    Leading axes batch independent sessions: (days, minutes, symbols) gives (days, minutes), each day on its own.
    A missing price counts as no change (return 0): it is what a forward-filled quote would show.
    """
    *batch, minutes, n_symbols = closes.shape
    out = np.full((*batch, minutes), np.nan)
    if minutes <= window + 1 or n_symbols == 0:
        return out
    with np.errstate(divide="ignore", invalid="ignore"):
        returns = np.log(closes[..., 1:, :] / closes[..., :-1, :])
    returns = np.where(np.isfinite(returns), returns, 0.0)
    # history[..., k, :, :] holds returns[..., k : k + window, :]: the trailing window of returns[..., k + window, :].
    history = np.lib.stride_tricks.sliding_window_view(returns, window, axis=-2)[..., :-1, :, :]  # (..., T', N, W)
    out[..., window + 1:] = mahalanobis(history, returns[..., window:, :], ridge)
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


def daily_turbulence(current: pl.DataFrame, closes: pl.DataFrame, history_days: Sequence[date],
                     window: int = DAILY_TURBULENCE_WINDOW_DAYS, ridge: float = TURBULENCE_RIDGE) -> pl.DataFrame:
    """Columns ts, turbulence_index_daily at every ts of one day's rows `current` (symbol, ts, close).

    `closes` (symbol, trading_day, close) are the daily closes of the earlier sessions `history_days` (oldest
    first). Every symbol with a close counts; one without a price yet today counts as unchanged. Null until
    `window` daily returns precede the day (window + 1 sessions, the oldest with a close).
    """
    stamps = current.select("ts").unique().sort("ts")
    symbols = sorted(set(current["symbol"].to_list()) | set(closes["symbol"].to_list()))
    history = daily_close_matrix(closes, history_days, symbols)
    values = np.full(stamps.height, np.nan)
    full = history.shape[0] > window and bool(np.isfinite(history[-window - 1]).any())
    if full and symbols and stamps.height:
        wide = stamps.join(current.pivot(on="symbol", index="ts", values="close", aggregate_function="last"),
                           on="ts", how="left")
        prices = wide.select([pl.col(s).forward_fill() if s in wide.columns else pl.lit(None, pl.Float64).alias(s)
                              for s in symbols]).to_numpy().astype(np.float64)
        window_closes = history[-window - 1:]
        with np.errstate(divide="ignore", invalid="ignore"):
            returns = np.log(window_closes[1:] / window_closes[:-1])
            today = np.log(prices / history[-1])
        # A missing price counts as no change, as in the minute index.
        returns = np.where(np.isfinite(returns), returns, 0.0).T  # (N, window)
        today = np.where(np.isfinite(today), today, 0.0)
        # One window for every stamp of the day: a batch of one covariance, broadcast against each stamp.
        values = mahalanobis(returns[None], today, ridge)
    return stamps.with_columns(pl.Series("turbulence_index_daily", values).fill_nan(None))
