"""Long polars frames -> the [days, minutes, symbols] numpy arrays of `MarketTensors.from_arrays`.

polars is imported inside each function, so importing this module (and the envs) needs only numpy.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# Columns of an external features frame read as the turbulence index (features.market names it turbulence_index).
TURBULENCE_COLUMNS = ("turbulence_index", "turbulence")


def _fill_along_minutes(a: np.ndarray) -> np.ndarray:
    """Forward-fill NaNs along axis 1 ([days, minutes, ...]), then back-fill the leading ones."""
    pos = np.arange(a.shape[1]).reshape(1, -1, *([1] * (a.ndim - 2)))
    idx = np.maximum.accumulate(np.where(np.isnan(a), 0, pos), axis=1)
    out = np.take_along_axis(a, idx, axis=1)
    idx = np.minimum.accumulate(np.where(np.isnan(out), a.shape[1] - 1, pos)[:, ::-1], axis=1)[:, ::-1]
    return np.take_along_axis(out, idx, axis=1)


def frames_to_arrays(bars: Any, features_frame: Any | None, default_spread_bps: float) -> dict[str, Any]:
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


def synthetic_market_bars(days: int, alpha: float, seed: int, symbols: tuple[str, ...], start: str) -> Any:
    """Minute bars of the embedded SyntheticMarket on `days` consecutive XNYS sessions from `start`."""
    from datetime import date, timedelta

    import polars as pl

    from pipeline.market.calendar import trading_days, trading_session
    from pipeline.market.synthetic import SyntheticMarket, SyntheticMarketConfig

    first = date.fromisoformat(start)
    sessions = trading_days(first, first + timedelta(days=2 * days + 10))[:days]
    market = SyntheticMarket(SyntheticMarketConfig(seed=seed, alpha=alpha))
    return pl.concat([market.minute_bars(trading_session(day), symbols) for day in sessions])
