"""The catalog features of [days, minutes, symbols] one-minute bars, each day on its own, computed by `pipeline.features`.

`MarketTensors.from_arrays` (the synthetic arrays, hand-made bars, bar frames without a features table) has no
features table to read: it lays its bars out as features.bars_1m rows and lets `pipeline.features` compute the
chosen columns, so the envs observe the numbers `market_features` gives a day computed without history (windows
start at each open, where the warehouse's reach into the session before).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from pipeline.envs.frames import TURBULENCE_COLUMN
from pipeline.envs.point_in_time import fill_forward
from pipeline.features.catalog import DEFAULT_FEATURES
from pipeline.features.model_features import market_features_without_history
from pipeline.features.turbulence import turbulence_from_closes

_EPOCH = np.datetime64("2000-01-03T00:00", "us")


def _bars_1m_rows(close: np.ndarray, bid: np.ndarray, ask: np.ndarray, high: np.ndarray | None,
                  low: np.ndarray | None, volume: np.ndarray | None) -> pl.DataFrame:
    """features.bars_1m rows (symbol, ts, trading_day, close, high, low, volume, spread_mean_bps) of the arrays,
    symbol by symbol, then day by day and minute by minute; NaN becomes null."""
    days, minutes, n_symbols = close.shape
    day = np.tile(np.repeat(np.arange(days), minutes), n_symbols)
    # Bar m of day d is stamped d * minutes + m + 1 minutes after an epoch: distinct and in order, all that counts.
    offset = np.tile(np.arange(days * minutes) + 1, n_symbols).astype("timedelta64[m]")
    columns = {"close": close, "high": high, "low": low, "volume": volume,
               # One quote a bar, the closing one: the bar's mean relative spread is that quote's.
               "spread_mean_bps": 1e4 * (ask - bid) / ((ask + bid) / 2.0)}
    return pl.DataFrame(
        {
            # Names that sort in array order.
            "symbol": pl.Series([f"{i:08d}" for i in range(n_symbols)]).gather(
                np.repeat(np.arange(n_symbols), days * minutes)
            ),
            "ts": _EPOCH + offset,
            "trading_day": _EPOCH.astype("datetime64[D]") + day,
            **{name: np.moveaxis(v, -1, 0).ravel() for name, v in columns.items() if v is not None},
        },
        nan_to_null=True,
    )


def minute_turbulence(close: np.ndarray) -> np.ndarray:
    """[days, minutes] turbulence_index of each day's [minutes, symbols] closes on its own, a missing close filled
    forward within the day (as on the features' minute grid); NaN until its window has filled."""
    return turbulence_from_closes(fill_forward(np.asarray(close, dtype=np.float64))[0])


def bar_features(
    close: np.ndarray,
    bid: np.ndarray,
    ask: np.ndarray,
    high: np.ndarray | None = None,
    low: np.ndarray | None = None,
    volume: np.ndarray | None = None,
    names: Sequence[str] = DEFAULT_FEATURES,
) -> dict[str, np.ndarray]:
    """The features.market columns `names` of [days, minutes, symbols] one-minute bars, NaN where null.

    NaN in the inputs is a bar without a price or quote. The spread is that of the closing quote (one quote a bar);
    without high/low or volume the features built from them are null throughout (missing, flagged by the caller),
    never a made-up 0. The turbulence index is copied to every symbol of its minute.
    """
    close, bid, ask = (np.asarray(a, dtype=np.float64) for a in (close, bid, ask))
    high, low, volume = (None if a is None else np.asarray(a, dtype=np.float64) for a in (high, low, volume))
    days, minutes, n_symbols = close.shape
    columns: dict[str, np.ndarray] = {}
    windowed = [n for n in names if n != TURBULENCE_COLUMN]
    if windowed:
        rows = market_features_without_history(_bars_1m_rows(close, bid, ask, high, low, volume), windowed)
        for name in windowed:
            values = rows[name].cast(pl.Float64).fill_null(np.nan).to_numpy()
            columns[name] = values.reshape(n_symbols, days, minutes).transpose(1, 2, 0)
    if TURBULENCE_COLUMN in names:
        columns[TURBULENCE_COLUMN] = np.repeat(minute_turbulence(close)[..., None], n_symbols, axis=-1)
    return {name: columns[name] for name in names}
