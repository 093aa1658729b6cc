"""features.market against independent references: every intraday column recomputed with numpy from its catalog
formula on a small hand-made day of one-minute bars (built from a list of trades), plus textbook cases whose
answer is known in closed form (Roll recovers a bid-ask bounce's spread, Parkinson a constant range, ...).

RSI and MACD are checked in test_features_market.py, the turbulence indices and the daily columns in
test_features_market.py and test_features_daily.py, FinRL's indicators against stockstats in test_features_finrl.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

import numpy as np
import polars as pl
import pytest
from features_testdata import SESSION

from pipeline.contract.calendar import TradingSession
from pipeline.contract.schemas import UTC_TS
from pipeline.features import MarketHistory, market_features
from pipeline.features.bars import BARS_1M_COLUMNS
from pipeline.features.catalog import MARKET, features_of, market_feature_names
from pipeline.features.windows import TRADING_DAYS

SYMBOL = "XYZ"
MINUTES = 120
EMPTY_MINUTES = (3, 40, 41, 77)  # minutes without trades: the bar repeats the last close with volume 0
# The early close before the 4th of July: the session before SESSION.
PREVIOUS = TradingSession(date(2024, 7, 3), datetime(2024, 7, 3, 13, 30, tzinfo=UTC), datetime(2024, 7, 3, 17, tzinfo=UTC))
CHECKED_ELSEWHERE = {"rsi_14", "macd", "macd_signal", "macd_hist", *(f.name for f in features_of(MARKET, "finrl"))}
INT_COLUMNS = {"trade_count", "quote_count"}
# Every features.market column but the turbulence indices and the daily ones (from daily closes, not minute bars).
INTRADAY = sorted(
    set(market_feature_names()) - CHECKED_ELSEWHERE - {f.name for f in features_of(MARKET, "turbulence")}
    - {f.name for f in features_of(MARKET) if f.window.unit == TRADING_DAYS}
)

Trade = tuple[int, float, float]  # (sign, size, price)


def _bars_frame(columns: dict[str, np.ndarray], session: TradingSession = SESSION) -> pl.DataFrame:
    """A features.bars_1m frame of SYMBOL from per-minute arrays (row i is the bar ending at open + i + 1 min)."""
    n = len(columns["close"])
    ts = [session.open + timedelta(minutes=i + 1) for i in range(n)]
    data = {"symbol": [SYMBOL] * n, "ts": ts, "trading_day": [session.trading_day] * n, **columns}
    schema = {c: (pl.Utf8 if c == "symbol" else UTC_TS if c == "ts" else pl.Date if c == "trading_day"
                  else pl.Int64 if c in INT_COLUMNS else pl.Float64) for c in BARS_1M_COLUMNS}
    frame = pl.DataFrame(data)
    # NaN stands for "no value" in the arrays; the table has nulls.
    return frame.with_columns(pl.col(pl.Float64).fill_nan(None)).select(BARS_1M_COLUMNS).cast(schema)


def _trades_day(seed: int = 11, level: float = 100.0) -> tuple[list[list[Trade]], dict[str, np.ndarray]]:
    """Per-minute trades around a random-walk mid, and the bars_1m columns they make (bars.py's rules)."""
    rng = np.random.default_rng(seed)
    mid = level * np.exp(np.cumsum(8e-4 * rng.standard_normal(MINUTES)))
    half = rng.uniform(0.01, 0.05, MINUTES)
    counts = rng.integers(1, 6, MINUTES)
    counts[list(EMPTY_MINUTES)] = 0
    trades: list[list[Trade]] = []
    for i in range(MINUTES):
        signs = rng.choice([-1, 1], counts[i])
        trades.append([(int(s), float(rng.integers(1, 10) * 100),
                        float(mid[i] * (1 + 5e-4 * rng.standard_normal()) + s * half[i])) for s in signs])
    cols: dict[str, list[float]] = {c: [] for c in BARS_1M_COLUMNS[3:]}
    close = math.nan
    for i, minute in enumerate(trades):
        prices = [p for _, _, p in minute]
        volume = sum(s for _, s, _ in minute)
        signed = sum(g * s for g, s, _ in minute)
        close = prices[-1] if prices else close
        row = {
            "open": prices[0] if prices else close, "high": max(prices, default=close),
            "low": min(prices, default=close), "close": close, "volume": volume,
            "vwap": sum(s * p for _, s, p in minute) / volume if volume else close, "trade_count": len(minute),
            "buy_volume": sum(s for g, s, _ in minute if g > 0), "sell_volume": sum(s for g, s, _ in minute if g < 0),
            "signed_volume": signed, "signed_dollar_volume": sum(g * s * p for g, s, p in minute),
            "effective_spread_bps": rng.uniform(1, 8), "quote_count": int(rng.integers(1, 30)),
            "spread_mean": rng.uniform(0.02, 0.1), "spread_last": 2 * half[i], "spread_mean_bps": rng.uniform(2, 10),
            "spread_last_bps": 2e4 * half[i] / mid[i], "depth_imbalance_mean": rng.uniform(-1, 1),
            "depth_imbalance_last": rng.uniform(-1, 1), "trade_sign_imbalance": signed / volume if volume else math.nan,
            "bid": mid[i] - half[i], "ask": mid[i] + half[i], "bid_size": rng.integers(1, 20) * 100.0,
            "ask_size": rng.integers(1, 20) * 100.0, "mid": mid[i],
        }
        for column, value in row.items():
            cols[column].append(value)
    return trades, {c: np.asarray(v, dtype=float) for c, v in cols.items()}


def _rolling(values: np.ndarray, n: int, stat: Callable[[np.ndarray], float]) -> np.ndarray:
    """stat over the last n values at each row; NaN until n values are there or while one is missing."""
    out = np.full(len(values), np.nan)
    for t in range(n - 1, len(values)):
        window = values[t - n + 1:t + 1]
        if np.isfinite(window).all():
            out[t] = stat(window)
    return out


def _wilder(values: np.ndarray, period: int) -> np.ndarray:
    """y = (1 - 1/period) y_prev + x / period, seeded with the first value; NaN until `period` values were seen."""
    out, level, seen = np.full(len(values), np.nan), math.nan, 0
    for t, x in enumerate(values):
        if np.isfinite(x):
            level = x if seen == 0 else (1 - 1 / period) * level + x / period
            seen += 1
        if seen >= period:
            out[t] = level
    return out


def _adx(high: np.ndarray, low: np.ndarray, close: np.ndarray, period: int = 14) -> np.ndarray:
    n = len(close)
    plus_dm, minus_dm, true_range = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
    for t in range(1, n):
        up, down = high[t] - high[t - 1], low[t - 1] - low[t]
        plus_dm[t] = up if up > down and up > 0 else 0.0
        minus_dm[t] = down if down > up and down > 0 else 0.0
        true_range[t] = max(high[t] - low[t], abs(high[t] - close[t - 1]), abs(low[t] - close[t - 1]))
    plus_di = 100 * _wilder(plus_dm, period) / _wilder(true_range, period)
    minus_di = 100 * _wilder(minus_dm, period) / _wilder(true_range, period)
    with np.errstate(invalid="ignore", divide="ignore"):
        dx = 100 * np.abs(plus_di - minus_di) / (plus_di + minus_di)
    return _wilder(dx, period)


def _reference(trades: list[list[Trade]], b: dict[str, np.ndarray],
               opens: tuple[int, ...] = (0,)) -> dict[str, np.ndarray]:
    """Every intraday features.market column from its catalog formula, with numpy, over consecutive sessions whose
    first rows are `opens`: windows run across them, the session columns restart at each."""
    c, o, h, lo, v = b["close"], b["open"], b["high"], b["low"], b["volume"]
    n = len(c)
    ret = np.concatenate([[np.nan], np.log(c[1:] / c[:-1])])
    # A session's first one-bar return counts from its own open: the overnight gap is left out.
    ret[list(opens[1:])] = np.log(c / o)[list(opens[1:])]
    sessions = [slice(start, end) for start, end in zip(opens, [*opens[1:], n], strict=True)]
    ref: dict[str, np.ndarray] = {}

    def per_session(stat: Callable[[np.ndarray], np.ndarray], values: np.ndarray) -> np.ndarray:
        return np.concatenate([stat(values[s]) for s in sessions])

    # Microstructure.
    ref["quoted_spread"] = b["spread_mean"]
    ref["relative_spread_bps"] = b["spread_mean_bps"]
    ref["relative_spread_last_bps"] = b["spread_last_bps"]
    ref["relative_spread_15m_bps"] = _rolling(b["spread_mean_bps"], 15, np.mean)
    ref["spread_volatility_15m_bps"] = _rolling(b["spread_mean_bps"], 15, lambda w: np.std(w, ddof=1))
    ref["depth_imbalance"] = b["depth_imbalance_mean"]
    ref["depth_imbalance_last"] = b["depth_imbalance_last"]
    ref["trade_sign_imbalance"] = b["trade_sign_imbalance"]
    ref["order_flow_imbalance_15m"] = _rolling(b["signed_volume"], 15, np.sum) / _rolling(v, 15, np.sum)
    with np.errstate(invalid="ignore", divide="ignore"):
        ref["buy_volume_ratio"] = b["buy_volume"] / v
    kyle = np.full(n, np.nan)
    for t in range(30, n):
        kyle[t] = 1e4 * np.polyfit(b["signed_dollar_volume"][t - 29:t + 1] / 1e6, ret[t - 29:t + 1], 1)[0]
    ref["kyle_lambda_30m"] = kyle
    ref["amihud_illiquidity_30m"] = 1e6 * _rolling(np.abs(ret), 30, np.sum) / _rolling(c * v, 30, np.sum)
    ref["effective_spread_bps"] = b["effective_spread_bps"]
    realized = np.full(n, np.nan)
    for t in range(5, n):
        past, mid_t = trades[t - 5], b["mid"][t]
        if past:  # the trades of minute t - 5, judged at the mid of t
            realized[t] = 2e4 * sum(g * s * (p - mid_t) for g, s, p in past) / (sum(s for _, s, _ in past) * mid_t)
    ref["realized_spread_5m_bps"] = realized
    roll = np.full(n, np.nan)
    dclose = np.diff(c)  # dclose[k] = c[k + 1] - c[k]
    for t in range(31, n):
        now, before = dclose[t - 30:t], dclose[t - 31:t - 1]  # (dclose_t', dclose_t'-1) for the 30 rows to t
        cov = np.mean(now * before) - now.mean() * before.mean()
        roll[t] = 2 * math.sqrt(max(0.0, -cov))
    ref["roll_spread_30m"] = roll
    ref["volume_zscore_30m"] = (v - _rolling(v, 30, np.mean)) / _rolling(v, 30, lambda w: np.std(w, ddof=1))
    tc = b["trade_count"]
    ref["trade_intensity_5m_30m"] = _rolling(tc, 5, np.mean) / _rolling(tc, 30, np.mean)
    ref["trades_per_minute_15m"] = _rolling(tc, 15, np.mean)
    ref["vwap_deviation_bps"] = 1e4 * (c / b["vwap"] - 1)
    dollars = per_session(np.cumsum, np.array([sum(s * p for _, s, p in minute) for minute in trades]))
    with np.errstate(invalid="ignore", divide="ignore"):
        ref["session_vwap_deviation_bps"] = 1e4 * (c / (dollars / per_session(np.cumsum, v)) - 1)
    ref["log_dollar_volume"] = np.log1p(c * v)

    # Momentum (RSI and MACD: test_features_market.py).
    for horizon in (1, 5, 15, 30, 60):
        ref[f"log_return_{horizon}m"] = _rolling(ret, horizon, np.sum)
    ref["price_vs_sma_15m"] = c / _rolling(c, 15, np.mean) - 1
    ref["price_vs_sma_60m"] = c / _rolling(c, 60, np.mean) - 1
    ref["stochastic_k_14"] = (c - _rolling(lo, 14, np.min)) / (_rolling(h, 14, np.max) - _rolling(lo, 14, np.min))
    ref["session_return"] = np.log(c / per_session(lambda x: np.full(len(x), x[0]), c))
    ref["distance_from_session_high"] = np.log(c / per_session(np.maximum.accumulate, h))
    ref["distance_from_session_low"] = np.log(c / per_session(np.minimum.accumulate, lo))

    # Volatility.
    for w in (5, 15, 30, 60):
        ref[f"realized_vol_{w}m"] = np.sqrt(_rolling(ret ** 2, w, np.sum))
    hl2, co2 = np.log(h / lo) ** 2, np.log(c / o) ** 2
    for w in (15, 30):
        ref[f"parkinson_vol_{w}m"] = np.sqrt(_rolling(hl2, w, np.mean) / (4 * math.log(2)))
        gk = _rolling(0.5 * hl2 - (2 * math.log(2) - 1) * co2, w, np.mean)
        ref[f"garman_klass_vol_{w}m"] = np.sqrt(np.maximum(gk, 0.0))
    ref["bar_range_bps"] = 1e4 * (h - lo) / c
    ref["vol_of_vol_30m"] = _rolling(ref["realized_vol_5m"], 30, lambda w: np.std(w, ddof=1))
    ref["vol_ratio_5m_60m"] = ref["realized_vol_5m"] / ref["realized_vol_60m"] * math.sqrt(12)

    # Regime.
    efficiency = np.full(n, np.nan)
    for t in range(30, n):
        efficiency[t] = abs(c[t] - c[t - 30]) / np.abs(np.diff(c[t - 30:t + 1])).sum()
    ref["efficiency_ratio_30m"] = efficiency
    ref["adx_14"] = _adx(h, lo, c)
    ref["trend_strength_30m"] = ref["log_return_30m"] / ref["realized_vol_30m"]
    ref["regime_trend_score"] = (efficiency + ref["adx_14"] / 100) / 2
    score = ref["regime_trend_score"]
    ref["regime_trending"] = np.where(np.isfinite(score), (score >= 0.3).astype(float), np.nan)
    return ref


def _as_list(values: np.ndarray) -> list[float | None]:
    return [float(x) if np.isfinite(x) else None for x in values]


def _assert_matches(got: list[float | None], expected: list[float | None], column: str, rel: float = 1e-9,
                    abs_tol: float = 1e-12) -> None:
    """Same null positions and values equal within tolerance, with the column named on failure."""
    nulls = [i for i, (g, e) in enumerate(zip(got, expected, strict=True)) if (g is None) != (e is None)]
    assert not nulls, f"{column}: null where the reference has a value, or the reverse, at rows {nulls[:10]}"
    pairs = [(g, e) for g, e in zip(got, expected, strict=True) if e is not None]
    assert pairs, f"{column}: the reference has no value to compare"
    assert [g for g, _ in pairs] == pytest.approx([e for _, e in pairs], rel=rel, abs=abs_tol), column


@pytest.fixture(scope="module", params=["one session", "after a session of history"])
def day(request: pytest.FixtureRequest) -> tuple[pl.DataFrame, dict[str, np.ndarray]]:
    """features.market of the hand-made day and its reference, alone or with the session before it as history."""
    trades, columns = _trades_day()
    if request.param == "one session":
        return market_features(_bars_frame(columns), SESSION).sort("ts"), _reference(trades, columns)
    # The day before trades about 5% lower: a gap that must stay out of the one-bar returns and not elsewhere.
    earlier_trades, earlier = _trades_day(seed=5, level=95.0)
    history = MarketHistory((PREVIOUS,), _bars_frame(earlier, PREVIOUS))
    both = {c: np.concatenate([earlier[c], columns[c]]) for c in columns}
    reference = _reference(earlier_trades + trades, both, opens=(0, MINUTES))
    market = market_features(_bars_frame(columns), SESSION, history=history).sort("ts")
    return market, {c: values[MINUTES:] for c, values in reference.items()}


def test_the_reference_covers_every_intraday_column() -> None:
    trades, columns = _trades_day()
    assert sorted(_reference(trades, columns)) == INTRADAY


@pytest.mark.parametrize("column", INTRADAY)
def test_column_matches_its_numpy_reference(day: tuple[pl.DataFrame, dict[str, np.ndarray]], column: str) -> None:
    market, reference = day
    got = [None if x is None else float(x) for x in market[column].to_list()]
    # ADX divides smoothed sums of a few cents; the rest are a handful of float operations.
    _assert_matches(got, _as_list(reference[column]), column, rel=1e-7 if column == "adx_14" else 1e-9)


def _bounce_day(spread: float, range_ratio: float, minutes: int = 60) -> pl.DataFrame:
    """Trades alternate between bid and ask of a fixed mid: every bar has the same log range and one trade."""
    mid = 50.0
    close = mid + spread / 2 * np.where(np.arange(minutes) % 2 == 0, 1.0, -1.0)
    high, low = close * math.exp(range_ratio / 2), close * math.exp(-range_ratio / 2)
    ones, nan = np.ones(minutes), np.full(minutes, np.nan)
    return _bars_frame({
        "open": close, "high": high, "low": low, "close": close, "volume": 100 * ones, "vwap": close,
        "trade_count": ones, "buy_volume": nan, "sell_volume": nan, "signed_volume": nan,
        "signed_dollar_volume": nan, "effective_spread_bps": nan, "quote_count": ones, "spread_mean": spread * ones,
        "spread_last": spread * ones, "spread_mean_bps": 1e4 * spread / mid * ones,
        "spread_last_bps": 1e4 * spread / mid * ones, "depth_imbalance_mean": nan, "depth_imbalance_last": nan,
        "trade_sign_imbalance": nan, "bid": (mid - spread / 2) * ones, "ask": (mid + spread / 2) * ones,
        "bid_size": 100 * ones, "ask_size": 100 * ones, "mid": mid * ones,
    })


def test_textbook_cases_on_a_bid_ask_bounce() -> None:
    spread, range_ratio = 0.04, 0.002
    rows = market_features(_bounce_day(spread, range_ratio), SESSION).sort("ts")
    # Roll (1984): every trade reverses, so dP alternates +-s, cov(dP_t, dP_t-1) = -s^2 and 2 sqrt(-cov) = 2s
    # (Roll's independent sides give -s^2 / 4 and recover s; a strict alternation is twice as negative).
    assert rows["roll_spread_30m"].drop_nulls().to_list() == pytest.approx([2 * spread] * (rows.height - 31))
    # Parkinson on a constant log range r is r / sqrt(4 ln 2); Garman-Klass with C = O is r / sqrt(2).
    assert rows["parkinson_vol_15m"].drop_nulls().to_list() == pytest.approx(
        [range_ratio / math.sqrt(4 * math.log(2))] * (rows.height - 14))
    assert rows["garman_klass_vol_30m"].drop_nulls().to_list() == pytest.approx(
        [range_ratio / math.sqrt(2)] * (rows.height - 29))
    # Going nowhere: every 30-minute window ends where it began, so Kaufman's ratio is 0; the session VWAP is the
    # mean of bid and ask, so the close sits half a spread (in bps of the VWAP) above or below it.
    assert rows["efficiency_ratio_30m"].drop_nulls().to_list() == pytest.approx([0.0] * (rows.height - 30))
    deviation = rows["session_vwap_deviation_bps"].to_list()
    assert deviation[1::2] == pytest.approx([-1e4 * spread / 2 / 50.0] * (rows.height // 2))


def test_a_steady_climb_is_fully_efficient_and_tops_the_stochastic() -> None:
    close = 20.0 * np.exp(1e-3 * np.arange(1, 41))
    frame = _bounce_day(0.02, 0.0, minutes=40).with_columns(
        open=pl.Series(close / math.exp(1e-3)), high=pl.Series(close), low=pl.Series(close / math.exp(1e-3)),
        close=pl.Series(close), vwap=pl.Series(close),
    )
    rows = market_features(frame, SESSION).sort("ts")
    assert rows["efficiency_ratio_30m"].drop_nulls().to_list() == pytest.approx([1.0] * 10)
    # The close is the 14-bar high: %K is 1; a steady 10 bp per minute is 30 x 10 bp over 30 minutes.
    assert rows["stochastic_k_14"].drop_nulls().to_list() == pytest.approx([1.0] * 27)
    assert rows["log_return_30m"][30] == pytest.approx(0.03)
    assert rows["realized_vol_30m"][30] == pytest.approx(math.sqrt(30) * 1e-3)
    assert rows["trend_strength_30m"][30] == pytest.approx(math.sqrt(30))
