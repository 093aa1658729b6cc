"""Daily features: log returns over trading days, realized volatility, drawdown from the trailing high, trend regime.

They are computed from daily closes: the closes of the sessions before the row's day (the history) and, as the
current price, the row's own close. On a daily bar (one row at the close) that is the usual daily series; on an
intraday row it is the same formula with the price known at ts, so the value is point in time during the day
too. A value is null until the sessions before it hold every close its window needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

import numpy as np
import polars as pl

from pipeline.features.regime import TRENDING_THRESHOLD

DAILY_RETURN_HORIZONS: tuple[int, ...] = (1, 5, 20, 60)
DAILY_VOL_WINDOW = 20
DRAWDOWN_WINDOWS: tuple[int, ...] = (60, 252)
DAILY_TREND_WINDOW = 20
CLOSES_SCHEMA = {"symbol": pl.Utf8, "trading_day": pl.Date, "close": pl.Float64}


def daily_close_matrix(closes: pl.DataFrame, history_days: Sequence[date], symbols: Sequence[str]) -> np.ndarray:
    """(sessions, symbols) daily closes in `history_days` order, NaN before a symbol's first close.

    A session without a close of a symbol keeps its previous close: what a forward-filled quote would show.
    """
    grid = pl.DataFrame({"trading_day": list(history_days)}, schema={"trading_day": pl.Date})
    if not symbols:
        return np.empty((grid.height, 0))
    wide = grid.join(
        closes.filter(pl.col("symbol").is_in(list(symbols)))
        .pivot(on="symbol", index="trading_day", values="close", aggregate_function="last"),
        on="trading_day", how="left",
    )
    matrix = wide.select(
        [pl.col(s).forward_fill() if s in wide.columns else pl.lit(None, pl.Float64).alias(s) for s in symbols]
    )
    return matrix.to_numpy().astype(np.float64)


def _tail(values: np.ndarray, n: int) -> np.ndarray | None:
    """The last n rows, or None when there are fewer (the window is not full)."""
    return values[values.shape[0] - n:] if values.shape[0] >= n else None


def _history_stats(closes: np.ndarray) -> dict[str, np.ndarray]:
    """Per symbol: the closes k sessions back and the window aggregates of the history (NaN where not full)."""
    n_symbols = closes.shape[1]
    missing = np.full(n_symbols, np.nan)
    stats: dict[str, np.ndarray] = {}
    for back in sorted({*DAILY_RETURN_HORIZONS, DAILY_TREND_WINDOW}):
        window = _tail(closes, back)
        stats[f"_close_{back}"] = missing if window is None else window[0]
    with np.errstate(divide="ignore", invalid="ignore"):
        returns = np.log(closes[1:] / closes[:-1]) if closes.shape[0] > 1 else np.empty((0, n_symbols))
    # Today's return completes the window: the history supplies the other window - 1 of them.
    window = _tail(returns, DAILY_VOL_WINDOW - 1) if closes.shape[0] >= DAILY_VOL_WINDOW else None
    stats["_sum_sq"] = missing if window is None else (window**2).sum(axis=0)
    for days in DRAWDOWN_WINDOWS:
        window = _tail(closes, days - 1)
        stats[f"_high_{days}"] = missing if window is None else window.max(axis=0)
    window = _tail(np.diff(closes, axis=0), DAILY_TREND_WINDOW - 1) if closes.shape[0] >= DAILY_TREND_WINDOW else None
    stats["_path"] = missing if window is None else np.abs(window).sum(axis=0)
    return stats


def add_daily(rows: pl.DataFrame, closes: pl.DataFrame, history_days: Sequence[date]) -> pl.DataFrame:
    """`rows` (symbol, close, ...) of one day with the daily columns added, from the `closes` (symbol,
    trading_day, close) of the earlier sessions `history_days` (oldest first)."""
    symbols = sorted(rows["symbol"].unique().to_list())
    stats = _history_stats(daily_close_matrix(closes, history_days, symbols))
    per_symbol = pl.DataFrame({"symbol": symbols, **stats}, schema_overrides={"symbol": pl.Utf8}).with_columns(
        pl.exclude("symbol").fill_nan(None)
    )
    close, previous = pl.col("close"), pl.col("_close_1")
    today = (close / previous).log()
    path = pl.col("_path") + (close - previous).abs()
    trend = f"regime_trend_score_{DAILY_TREND_WINDOW}d"
    return (
        rows.join(per_symbol, on="symbol", how="left")
        .with_columns(
            *[(close / pl.col(f"_close_{h}")).log().alias(f"log_return_{h}d") for h in DAILY_RETURN_HORIZONS],
            *[
                pl.when(pl.col(f"_high_{d}").is_not_null())
                .then((close / pl.max_horizontal(pl.col(f"_high_{d}"), close)).log())
                .alias(f"drawdown_{d}d")
                for d in DRAWDOWN_WINDOWS
            ],
            (pl.col("_sum_sq") + today**2).sqrt().alias(f"realized_vol_{DAILY_VOL_WINDOW}d"),
            # A flat window has no path: no efficiency to measure.
            pl.when(path > 0).then((close - pl.col(f"_close_{DAILY_TREND_WINDOW}")).abs() / path).alias(trend),
        )
        .with_columns((pl.col(trend) >= TRENDING_THRESHOLD).cast(pl.Int8).alias(f"regime_trending_{DAILY_TREND_WINDOW}d"))
        .drop(per_symbol.columns[1:])
    )
