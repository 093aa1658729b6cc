"""FinRL's indicator set (macd, boll_ub, boll_lb, rsi_30, cci_30, dx_30, close_30_sma, close_60_sma) against
stockstats, the library FinRL computes them with, on a daily OHLCV series with drifting volatility and gaps.

Windowed indicators equal stockstats' once their window is full (stockstats averages partial windows before);
the recursive ones (RSI, MACD) start where the data starts, so they equal stockstats' to within the seed's
remaining weight after `Window.settle` bars (`_seed_bound`), and to float rounding after three times that.
features.market on daily bars computes them over the bars its lookback reads (the longest settle), as stockstats
does over those bars.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import polars as pl
import pytest
from stockstats import StockDataFrame

from pipeline.contract.calendar import trading_days, trading_session
from pipeline.contract.schemas import conform
from pipeline.features.catalog import MARKET, features_of
from pipeline.features.finrl_indicators import add_finrl_indicators
from pipeline.features.lookback import row_lookback_sessions
from pipeline.features.model_features import market_features_days
from pipeline.features.momentum import add_momentum
from pipeline.features.windows import DAY_MINUTES, SEED_WEIGHT

# Our column -> stockstats' (FinRL's `config.INDICATORS` plus MACD's signal and histogram).
STOCKSTATS_NAMES = {
    "macd": "macd", "macd_signal": "macds", "macd_hist": "macdh", "boll_ub": "boll_ub", "boll_lb": "boll_lb",
    "rsi_30": "rsi_30", "cci_30": "cci_30", "dx_30": "dx_30", "close_30_sma": "close_30_sma",
    "close_60_sma": "close_60_sma",
}
WINDOW = {f.name: f.window for f in features_of(MARKET)}
RECURSIVE = ("rsi_30", "dx_30", "macd", "macd_signal", "macd_hist")
WINDOWED = tuple(c for c in STOCKSTATS_NAMES if c not in RECURSIVE)
BARS = 1000


def _ohlcv(n: int, seed: int) -> dict[str, np.ndarray]:
    """Daily bars: log-normal closes whose volatility drifts (calm and stormy stretches), overnight gaps, highs and
    lows beyond open and close."""
    rng = np.random.default_rng(seed)
    vol = 0.012 * np.exp(np.clip(np.cumsum(0.05 * rng.standard_normal(n)), -1.0, 1.0))
    close = 100.0 * np.exp(np.cumsum(3e-4 + vol * rng.standard_normal(n)))
    open_ = np.concatenate([[100.0], close[:-1]]) * np.exp(0.3 * vol * rng.standard_normal(n))
    high = np.maximum(open_, close) * np.exp(np.abs(0.5 * vol * rng.standard_normal(n)))
    low = np.minimum(open_, close) * np.exp(-np.abs(0.5 * vol * rng.standard_normal(n)))
    return {"open": open_, "high": high, "low": low, "close": close, "volume": rng.lognormal(15.0, 0.4, n)}


def _stockstats(bars: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    frame = StockDataFrame.retype(pd.DataFrame(bars))
    return {ours: np.asarray(frame[theirs], dtype=float) for ours, theirs in STOCKSTATS_NAMES.items()}


def _ours(bars: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The momentum and FinRL columns of one symbol's bars (bar counts: the minute horizons do not matter)."""
    frame = pl.LazyFrame({"symbol": ["X"] * len(bars["close"]), "trading_day": list(range(len(bars["close"]))),
                          **bars}).with_columns(ret_1=(pl.col("close") / pl.col("close").shift(1)).log())
    out = add_finrl_indicators(add_momentum(frame, lambda minutes: minutes)).collect()
    return {c: out[c].cast(pl.Float64).fill_null(np.nan).to_numpy() for c in STOCKSTATS_NAMES}


@pytest.fixture(scope="module")
def series() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]]:
    bars = _ohlcv(BARS, seed=3)
    return bars, _ours(bars), _stockstats(bars)


def _seed_bound(column: str, close: np.ndarray) -> float:
    """What the seed may still move a recursive column by after its settle bars: SEED_WEIGHT of its largest gap.

    A MACD line's EMAs start within the closes' range of where a longer series puts them. RSI and DX are ratios
    of two smoothed sums in [0, 100]; when the sums are small (a quiet stretch after a stormy start) the ratio
    magnifies what the seed still weighs, so they get 5 x SEED_WEIGHT of their range: half a point.
    """
    if column in ("rsi_30", "dx_30"):
        return 5 * SEED_WEIGHT * 100.0
    return SEED_WEIGHT * 2 * float(close.max() - close.min())


@pytest.mark.parametrize("column", WINDOWED)
def test_windowed_indicators_equal_stockstats_once_the_window_is_full(series, column: str) -> None:
    _, ours, theirs = series
    warmup = WINDOW[column].warmup
    assert np.isnan(ours[column][:warmup]).all(), f"{column}: null until its window is full"
    np.testing.assert_allclose(ours[column][warmup:], theirs[column][warmup:], rtol=1e-9, atol=1e-9,
                               err_msg=column)


@pytest.mark.parametrize("column", RECURSIVE)
def test_recursive_indicators_equal_stockstats_once_the_seed_has_decayed(series, column: str) -> None:
    bars, ours, theirs = series
    window = WINDOW[column]
    assert np.isnan(ours[column][:window.warmup]).all() and np.isfinite(ours[column][window.warmup:]).all()
    # pandas' adjusted EWM from bar 0 (stockstats) vs the recursion seeded at the first bar with a value.
    gap = np.abs(ours[column] - theirs[column])
    assert gap[window.settle:].max() < _seed_bound(column, bars["close"]), column
    assert 3 * window.settle < BARS and gap[3 * window.settle:].max() < 1e-6, column


def test_flat_bars_give_neutral_values_and_no_nan() -> None:
    flat = {k: np.full(80, 50.0) for k in ("open", "high", "low", "close")} | {"volume": np.full(80, 1e5)}
    ours = _ours(flat)
    assert set(ours["rsi_30"][30:]) == {50.0} and set(ours["cci_30"][29:]) == {0.0}
    assert np.isnan(ours["dx_30"]).all()  # no directional movement: null (stockstats says 0)
    assert set(ours["boll_ub"][19:]) == set(ours["boll_lb"][19:]) == set(ours["close_60_sma"][59:]) == {50.0}


def _daily_bars(symbols: dict[str, dict[str, np.ndarray]], days: list) -> pl.DataFrame:
    """raw.bars rows of one-day bars stamped at the session's date (start-stamped, as Alpaca's)."""
    rows = [
        {"symbol": symbol, "ts": datetime(day.year, day.month, day.day, tzinfo=UTC), "interval": "1d",
         **{k: float(v[i]) for k, v in bars.items()}, "source": "test", "trading_day": day}
        for symbol, bars in symbols.items() for i, day in enumerate(days)
    ]
    return conform("bars", pl.DataFrame(rows))


def test_features_market_computes_them_on_daily_bars_over_the_bars_its_lookback_reads() -> None:
    days = trading_days("2023-01-03", "2024-03-28")  # 310 sessions: more than the lookback reads
    symbols = {"IDX": _ohlcv(len(days), seed=5), "STK": _ohlcv(len(days), seed=8)}
    no_minutes = pl.DataFrame(schema={"symbol": pl.Utf8, "ts": pl.Datetime("us", "UTC"), "trading_day": pl.Date,
                                      "close": pl.Float64})
    targets = 2
    market = market_features_days([trading_session(d) for d in days], no_minutes, _daily_bars(symbols, days),
                                  targets=targets)
    assert market["bar_interval"].unique().to_list() == ["1d"] and market.height == targets * len(symbols)
    reach = row_lookback_sessions(DAY_MINUTES)
    assert reach == max(WINDOW[c].settle for c in RECURSIVE)  # the longest settle of a daily-bar column
    for symbol, bars in symbols.items():
        rows = market.filter(pl.col("symbol") == symbol).sort("ts")
        for k, position in enumerate(range(len(days) - targets, len(days))):
            # stockstats over the same bars: the day and the `reach` sessions before it.
            theirs = _stockstats({c: v[position - reach:position + 1] for c, v in bars.items()})
            for column in STOCKSTATS_NAMES:
                got, expected = rows[column][k], theirs[column][-1]
                tolerance = _seed_bound(column, bars["close"]) if column in RECURSIVE else 1e-9 * abs(expected)
                assert abs(got - expected) <= tolerance, (symbol, days[position], column, got, expected)
