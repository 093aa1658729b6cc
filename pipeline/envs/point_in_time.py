"""Point-in-time filling of [days, minutes, ...] arrays at the seam between the data and the envs (numpy only).

One rule everywhere: a missing value is filled FORWARD from the last value seen earlier the same trading day, never
from a later bar. A value with nothing before it stays unfilled: it becomes 0 with a `<name>_missing` flag of 1
beside it, so the agent can tell "no data yet" from a real 0. NaN and inf count as missing, never as a silent 0.
A symbol is tradable from its first quote of the day on; before that its bid/ask are `UNQUOTED_PRICE`, a stand-in
that carries no information about the later quote.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

MISSING_SUFFIX = "_missing"
UNQUOTED_PRICE = 1.0
"""bid = ask of a bar before the symbol's first quote of the day (never tradable, so never a fill price)."""


def fill_forward(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(filled, seen) along axis 1 of [days, minutes, ...]: each non-finite value takes the last finite one before
    it the same day (NaN if none); `seen` is True from a column's first finite value of the day on."""
    finite = np.isfinite(values)
    pos = np.arange(values.shape[1]).reshape(1, -1, *([1] * (values.ndim - 2)))
    last = np.maximum.accumulate(np.where(finite, pos, -1), axis=1)
    seen = last >= 0
    filled = np.take_along_axis(values, np.maximum(last, 0), axis=1)
    return np.where(seen, filled, np.nan), seen


def observation_arrays(columns: Mapping[str, np.ndarray]) -> tuple[np.ndarray, tuple[str, ...]]:
    """[days, minutes, symbols, 2F] features (each filled forward, 0 where unfilled) then their missing flags.

    `columns` maps a feature name to its [days, minutes, symbols] values (NaN where the warehouse had none).
    """
    values, flags = [], []
    for column in columns.values():
        filled, seen = fill_forward(np.asarray(column, dtype=np.float64))
        values.append(np.where(seen, filled, 0.0))
        flags.append((~seen).astype(np.float64))
    names = (*columns, *(f"{name}{MISSING_SUFFIX}" for name in columns))
    return np.stack(values + flags, axis=-1), names


def tradable_quotes(bid: np.ndarray, ask: np.ndarray, quoted: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """bid, ask, quoted and tradable [days, minutes, symbols] from quotes that are NaN where none was in force.

    Quotes are filled forward within the day; a bar before the symbol's first quote of the day is not tradable and
    holds `UNQUOTED_PRICE`, and neither is a bar that only carries forward a price imputed from an earlier close. `quoted` (default: every present quote) marks real quotes as opposed to quotes imputed
    from a bar's close; it is filled forward with them and False where untradable.
    """
    present = np.isfinite(bid) & np.isfinite(ask)
    both = np.where(present[..., None], np.stack([bid, ask], axis=-1), np.nan)
    filled, seen = fill_forward(both)
    real = np.where(present, present if quoted is None else np.asarray(quoted, dtype=bool), np.nan)
    real_filled, _ = fill_forward(real.astype(np.float64))
    # A real quote stands until replaced; a price imputed from a bar's close is good for that bar only: carried to
    # a bar without one, an order would fill at the close the agent has just seen.
    tradable = seen[..., 0] & (present | (real_filled == 1.0))
    return {
        "bid": np.where(tradable, filled[..., 0], UNQUOTED_PRICE),
        "ask": np.where(tradable, filled[..., 1], UNQUOTED_PRICE),
        "quoted": tradable & (real_filled == 1.0),
        "tradable": tradable,
    }


def minute_series(per_symbol: np.ndarray) -> np.ndarray:
    """[days, minutes] from a [days, minutes, symbols] column that is the same for every symbol at a minute (the
    turbulence index): the value of any symbol that has it, filled forward within the day, 0 where none yet."""
    finite = np.isfinite(per_symbol)
    any_value = np.where(finite, per_symbol, -np.inf).max(axis=-1)
    filled, seen = fill_forward(np.where(finite.any(axis=-1), any_value, np.nan))
    return np.where(seen, filled, 0.0)
