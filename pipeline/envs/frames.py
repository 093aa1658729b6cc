"""Long polars frames (warehouse rows) -> the [days, minutes, symbols] arrays of `MarketTensors.from_arrays`.

The one pivot between the tables and the envs: the warehouse loader, `MarketTensors.from_frames` and the embedded
synthetic market all go through `frames_to_arrays`, so they fill, flag and mask the same way (`point_in_time`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl

from pipeline.contract.calendar import NY_TZ
from pipeline.envs.point_in_time import fill_forward, minute_series, observation_arrays, tradable_quotes

TURBULENCE_COLUMN = "turbulence_index"
"""The features.market column that drives the envs' risk-off (MarketTensors.turbulence)."""
DEFAULT_HALF_SPREAD_BPS = 1.0
"""Half-spread around the close of a symbol without quotes (bar-only sources): bid/ask = close -+ 1 bp."""
KEYS = ("symbol", "ts", "trading_day")


def impute_quotes(frame: Any, half_spread_bps: float = DEFAULT_HALF_SPREAD_BPS) -> Any:
    """`frame` with bid, ask and `quoted`: its own bid/ask where it has those columns (quoted where both are
    present), else close -+ `half_spread_bps` (quoted False: an imputed quote, not one seen in the market)."""
    if {"bid", "ask"} <= set(frame.columns):
        return frame.with_columns(quoted=pl.col("bid").is_not_null() & pl.col("ask").is_not_null())
    if "close" not in frame.columns:
        raise ValueError(f"a price frame needs bid and ask, or close; it has {frame.columns}")
    half = half_spread_bps * 1e-4
    return frame.with_columns(
        bid=pl.col("close") * (1.0 - half), ask=pl.col("close") * (1.0 + half), quoted=pl.lit(False)
    )


def _with_keys(frame: Any) -> Any:
    missing = [c for c in ("symbol", "ts") if c not in frame.columns]
    if missing:
        raise ValueError(f"frame lacks key columns {missing}; it needs symbol, ts (and trading_day)")
    dtype = frame.schema["ts"]
    ts = pl.col("ts").dt.replace_time_zone("UTC") if dtype.time_zone is None else pl.col("ts")
    frame = frame.with_columns(ts.dt.convert_time_zone("UTC").dt.cast_time_unit("us"))
    if "trading_day" not in frame.columns:
        frame = frame.with_columns(trading_day=pl.col("ts").dt.convert_time_zone(NY_TZ).dt.date())
    duplicated = frame.select("symbol", "ts").is_duplicated()
    if duplicated.any():
        example = frame.filter(duplicated).row(0, named=True)
        raise ValueError(
            f"several rows for symbol {example['symbol']} at {example['ts']}; keep one row per symbol and bar"
        )
    return frame


def frames_to_arrays(
    prices: Any,
    features: Any | None = None,
    feature_names: Sequence[str] | None = None,
    symbols: Sequence[str] | None = None,
    turbulence_column: str = TURBULENCE_COLUMN,
) -> dict[str, Any]:
    """Pivot long frames into the keyword arguments of `MarketTensors.from_arrays`.

    `prices` has symbol, ts (bar END), trading_day, bid, ask, quoted (see `impute_quotes`) and optionally close,
    high, low, volume. `features` has symbol, ts and the `feature_names` columns (default: all its numeric ones)
    plus `turbulence_column` (the minute index, or `turbulence_index_daily` on daily bars) for risk-off. Bars are the distinct ts of each trading day in either frame; a value a
    symbol lacks at a bar is filled forward within the day, else 0 with its `<name>_missing` flag; a symbol is
    tradable from its first quote of the day. Without `features`, the returned close/high/low/volume let
    `from_arrays` compute the default features.
    """
    prices = _with_keys(prices)
    frames = [prices] if features is None else [prices, _with_keys(features)]
    if prices.is_empty():
        raise ValueError("no price rows: materialize features.bars_1m (or raw.bars) for these days first")
    chosen = sorted(set(pl.concat([f.select("symbol") for f in frames])["symbol"].to_list()))
    if symbols is not None:
        unknown = sorted(set(symbols) - set(chosen))
        if unknown:
            raise ValueError(f"no rows for symbols {unknown}; the frames hold {chosen}")
        chosen = list(symbols)
    frames = [f.filter(pl.col("symbol").is_in(chosen)) for f in frames]
    grid = (
        pl.concat([f.select("trading_day", "ts") for f in frames]).unique()
        .with_columns(_d=pl.col("trading_day").rank("dense") - 1, _m=pl.col("ts").rank("dense").over("trading_day") - 1)
    )
    days = grid.select("trading_day", "_d").unique().sort("_d")
    shape = (days.height, int(grid["_m"].max()) + 1, len(chosen))
    index = {s: i for i, s in enumerate(chosen)}

    def pivot(frame: Any, columns: Sequence[str]) -> dict[str, np.ndarray]:
        located = frame.join(grid, on=["trading_day", "ts"]).with_columns(
            _s=pl.col("symbol").replace_strict(index, return_dtype=pl.Int64)
        )
        d, m, s = (located[c].to_numpy() for c in ("_d", "_m", "_s"))
        out = {}
        for c in columns:
            values = np.full(shape, np.nan)
            values[d, m, s] = located[c].cast(pl.Float64).fill_null(np.nan).to_numpy()
            out[c] = values
        return out

    quotes = pivot(prices, ["bid", "ask", "quoted"])
    arrays: dict[str, Any] = tradable_quotes(quotes["bid"], quotes["ask"], quotes["quoted"] == 1.0)
    arrays["session_minutes"] = (grid.group_by("_d").agg(pl.len()).sort("_d")["len"].to_numpy()).tolist()
    arrays["symbols"] = tuple(chosen)
    arrays["trading_days"] = tuple(str(d) for d in days["trading_day"])
    if features is None:
        bars = pivot(prices, [c for c in ("close", "high", "low", "volume") if c in prices.columns])
        arrays.update({c: fill_forward(v)[0] for c, v in bars.items()})
        return arrays
    names = list(feature_names) if feature_names is not None else [
        c for c, t in frames[1].schema.items() if t.is_numeric() and c not in KEYS
    ]
    if not names:
        raise ValueError("features frame has no numeric feature columns besides symbol/ts/trading_day")
    lacking = [c for c in names if c not in frames[1].columns]
    if lacking:
        raise ValueError(f"features frame lacks the chosen columns {lacking}; it has {frames[1].columns}")
    extra = [turbulence_column] if turbulence_column in frames[1].columns and turbulence_column not in names else []
    columns = pivot(frames[1], [*names, *extra])
    arrays["features"], arrays["feature_names"] = observation_arrays({n: columns[n] for n in names})
    turbulence = columns.get(turbulence_column)
    arrays["turbulence"] = (
        minute_series(turbulence) if turbulence is not None else np.zeros(shape[:2])
    )
    return arrays


def synthetic_market_frames(
    days: int, alpha: float, seed: int, symbols: Sequence[str], start: str
) -> tuple[Any, Any]:
    """(bars_1m, features.market) rows of the embedded SyntheticMarket on `days` consecutive XNYS sessions from
    `start`: its trades and quotes through `pipeline.features.bars_1m`, then `market_features_days` (each day
    looks back into the days before it), as the assets do, without the validation and the warehouse round trip."""
    from datetime import date, timedelta

    from pipeline.contract.calendar import trading_days, trading_session
    from pipeline.features import bars_1m
    from pipeline.features.model_features import market_features_days
    from pipeline.sources.settings import SourceSettings, build_market_source
    from pipeline.synthetic.config import SyntheticMarketConfig

    first = date.fromisoformat(start)
    sessions = [trading_session(d) for d in trading_days(first, first + timedelta(days=2 * days + 10))[:days]]
    market = build_market_source(SourceSettings(synthetic=SyntheticMarketConfig(seed=seed, alpha=alpha)))
    bars = pl.concat([
        bars_1m(market.fetch("trades", s, list(symbols)), market.fetch("quotes", s, list(symbols)), s)
        for s in sessions
    ])
    return bars, market_features_days(sessions, bars)
