"""Daily features and the daily turbulence index against independent numpy references on a small hand series."""

from __future__ import annotations

from datetime import UTC, date, datetime

import numpy as np
import polars as pl
import pytest

from pipeline.contract.calendar import trading_days, trading_session
from pipeline.contract.schemas import conform
from pipeline.features.daily import add_daily
from pipeline.features.model_features import market_features_days
from pipeline.features.turbulence import TURBULENCE_RIDGE, daily_turbulence

DAYS = trading_days("2024-01-02", "2024-04-30")  # 83 sessions: every daily window but the 252-day ones fills
SYMBOLS = ("AAA", "BBB", "CCC")


def _closes(n: int, seed: int = 11) -> np.ndarray:
    """(days, symbols) closes of correlated random walks; CCC is flat for a stretch (a zero-path window)."""
    rng = np.random.default_rng(seed)
    common = rng.standard_normal((n, 1))
    steps = 0.01 * (0.7 * common + 0.7 * rng.standard_normal((n, len(SYMBOLS))))
    closes = 100.0 * np.exp(np.cumsum(steps, axis=0))
    if n > 55:
        closes[30:55, 2] = closes[30, 2]
    return closes


def _daily_bars(closes: np.ndarray) -> pl.DataFrame:
    rows = [
        {"symbol": symbol, "ts": datetime(day.year, day.month, day.day, tzinfo=UTC), "interval": "1d",
         "open": closes[i, j], "high": closes[i, j] * 1.01, "low": closes[i, j] * 0.99, "close": closes[i, j],
         "volume": 1e6, "source": "test", "trading_day": day}
        for i, day in enumerate(DAYS) for j, symbol in enumerate(SYMBOLS)
    ]
    return conform("bars", pl.DataFrame(rows))


@pytest.fixture(scope="module")
def series() -> tuple[np.ndarray, pl.DataFrame]:
    closes = _closes(len(DAYS))
    sessions = [trading_session(day) for day in DAYS]
    frame = market_features_days(sessions, pl.DataFrame(schema={"symbol": pl.Utf8, "ts": pl.Datetime("us", "UTC"),
                                                                 "trading_day": pl.Date, "close": pl.Float64}),
                                 _daily_bars(closes))
    return closes, frame


def _reference(c: np.ndarray, t: int) -> dict[str, float | None]:
    """Loop reference for one symbol's close series c at day t (today's close included)."""
    ret = np.diff(np.log(c))
    out: dict[str, float | None] = {
        f"log_return_{h}d": float(np.log(c[t] / c[t - h])) if t >= h else None for h in (1, 5, 20, 60)
    }
    out["realized_vol_20d"] = float(np.sqrt(np.sum(ret[t - 20:t] ** 2))) if t >= 20 else None
    out["drawdown_60d"] = float(np.log(c[t] / c[t - 59:t + 1].max())) if t >= 59 else None
    out["drawdown_252d"] = None
    path = np.abs(np.diff(c[t - 20:t + 1])).sum() if t >= 20 else 0.0
    score = abs(c[t] - c[t - 20]) / path if t >= 20 and path > 0 else None
    out["regime_trend_score_20d"] = score
    out["regime_trending_20d"] = None if score is None else int(score >= 0.3)
    return out


@pytest.mark.parametrize("column", ["log_return_1d", "log_return_5d", "log_return_20d", "log_return_60d",
                                    "realized_vol_20d", "drawdown_60d", "drawdown_252d", "regime_trend_score_20d",
                                    "regime_trending_20d"])
def test_daily_bars_match_a_loop_reference(series: tuple[np.ndarray, pl.DataFrame], column: str) -> None:
    closes, frame = series
    for j, symbol in enumerate(SYMBOLS):
        got = frame.filter(pl.col("symbol") == symbol).sort("ts")[column].to_list()
        expected = [_reference(closes[:, j], t)[column] for t in range(len(DAYS))]
        assert [g is None for g in got] == [e is None for e in expected], (symbol, column)
        pairs = [(g, e) for g, e in zip(got, expected, strict=True) if e is not None]
        assert pairs or column == "drawdown_252d", (symbol, column)
        assert [g for g, _ in pairs] == pytest.approx([e for _, e in pairs], rel=1e-9, abs=1e-12), (symbol, column)


def test_a_flat_window_has_no_trend_score(series: tuple[np.ndarray, pl.DataFrame]) -> None:
    _, frame = series
    flat = frame.filter(pl.col("symbol") == "CCC").sort("ts")
    # CCC is flat from day 30 to 54: the 20-day windows ending inside have no path, hence no efficiency.
    assert flat["regime_trend_score_20d"][51] is None and flat["log_return_20d"][51] == 0.0
    assert flat["drawdown_60d"].drop_nulls().max() <= 0.0


def _turbulence_reference(closes: np.ndarray, current: np.ndarray, window: int) -> float:
    returns = np.diff(np.log(closes[-window - 1:]), axis=0)
    mean, cov = returns.mean(axis=0), np.cov(returns, rowvar=False)
    cov = cov + TURBULENCE_RIDGE * np.trace(cov) / closes.shape[1] * np.eye(closes.shape[1])
    deviation = np.log(current / closes[-1]) - mean
    return float(deviation @ np.linalg.inv(cov) @ deviation)


def _closes_frame(closes: np.ndarray, days: list[date]) -> pl.DataFrame:
    return pl.DataFrame([{"symbol": s, "trading_day": d, "close": closes[i, j]}
                         for i, d in enumerate(days) for j, s in enumerate(SYMBOLS)])


def test_daily_turbulence_matches_a_numpy_reference_intraday_and_at_the_close() -> None:
    closes = _closes(30, seed=5)
    history, days = closes[:-1], DAYS[:29]
    stamps = [datetime(2024, 2, 14, h, tzinfo=UTC) for h in (15, 18, 21)]
    # Intraday: BBB has no price yet at 15:00 (unchanged from its close); the last stamp holds every close.
    current = pl.DataFrame({
        "symbol": ["AAA", "AAA", "BBB", "AAA", "BBB", "CCC"],
        "ts": [stamps[0], stamps[1], stamps[1], stamps[2], stamps[2], stamps[2]],
        "close": [closes[-1, 0] * 0.97, closes[-1, 0], closes[-1, 1], *closes[-1]],
    })
    got = daily_turbulence(current, _closes_frame(history, days), days, window=20)["turbulence_index_daily"]
    first = np.array([closes[-1, 0] * 0.97, history[-1, 1], history[-1, 2]])
    second = np.array([closes[-1, 0], closes[-1, 1], history[-1, 2]])
    expected = [_turbulence_reference(history, now, 20) for now in (first, second, closes[-1])]
    assert got.to_list() == pytest.approx(expected, rel=1e-9)
    assert got[0] > got[1]  # a 3% drop is turbulent


def test_daily_turbulence_is_null_until_its_window_is_full() -> None:
    closes = _closes(254, seed=3)
    days = trading_days("2023-01-03", "2024-01-05")[:254]
    current = pl.DataFrame({"symbol": list(SYMBOLS), "ts": [datetime(2024, 1, 8, 21, tzinfo=UTC)] * 3,
                            "close": closes[-1] * 1.01})
    # The default window is FinRL's 252 daily returns: 253 earlier closes.
    short = daily_turbulence(current, _closes_frame(closes[1:253], days[1:253]), days[1:253])
    full = daily_turbulence(current, _closes_frame(closes[:253], days[:253]), days[:253])
    assert short["turbulence_index_daily"].to_list() == [None]
    assert full["turbulence_index_daily"][0] == pytest.approx(
        _turbulence_reference(closes[:253], closes[-1] * 1.01, 252), rel=1e-9)


def test_intraday_rows_read_the_current_close_against_earlier_daily_closes() -> None:
    closes = _closes(25, seed=9)
    days = DAYS[:24]
    rows = pl.DataFrame({"symbol": ["AAA", "AAA", "ZZZ"], "close": [50.0, 51.0, 10.0]})
    out = add_daily(rows, _closes_frame(closes[:24], days), days)
    assert out["log_return_1d"].to_list()[:2] == pytest.approx([np.log(50 / closes[23, 0]), np.log(51 / closes[23, 0])])
    assert out["log_return_20d"][1] == pytest.approx(np.log(51 / closes[4, 0]))
    # A symbol without history has no daily features yet.
    assert out.filter(pl.col("symbol") == "ZZZ")["log_return_1d"].to_list() == [None]
