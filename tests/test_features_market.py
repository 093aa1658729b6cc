"""features.market: point in time, reference implementations, bar-only symbols, null (never NaN) until filled."""

from __future__ import annotations

import math
from datetime import timedelta

import numpy as np
import polars as pl
import pytest
from features_testdata import SESSION, daily_bar, raw_bars, ticks

from pipeline.features import bars_1m, market_features
from pipeline.features.catalog import MARKET, features_of, market_feature_names
from pipeline.features.model_features import KEY_COLUMNS
from pipeline.features.turbulence import TURBULENCE_RIDGE, TURBULENCE_WINDOW_MIN

TICK_SYMBOLS = ["AAA", "BBB", "CCC"]


@pytest.fixture(scope="module")
def day() -> dict[str, pl.DataFrame]:
    trades, quotes = ticks(TICK_SYMBOLS, trades_per_symbol=2500)
    bars = pl.concat([raw_bars("DDD", "1m", 1), raw_bars("EEE", "5m", 5, seed=4), daily_bar("FFF")])
    minute_bars = bars_1m(trades, quotes, SESSION)
    return {"trades": trades, "quotes": quotes, "bars": bars, "bars_1m": minute_bars,
            "market": market_features(minute_bars, SESSION, bars=bars)}


def _assert_close(got: list[float | None], expected: list[float | None], rel: float = 1e-9,
                  abs_tol: float = 1e-12) -> None:
    """Same null positions, and values equal within tolerance."""
    assert [g is None for g in got] == [e is None for e in expected]
    pairs = [(g, e) for g, e in zip(got, expected, strict=True) if e is not None]
    assert [g for g, _ in pairs] == pytest.approx([e for _, e in pairs], rel=rel, abs=abs_tol)


def _symbol(frame: pl.DataFrame, symbol: str) -> pl.DataFrame:
    return frame.filter(pl.col("symbol") == symbol).sort("ts")


@pytest.mark.parametrize("minutes_after_open", [45, 200, 389])
def test_rows_up_to_t_do_not_change_when_later_inputs_change(day: dict[str, pl.DataFrame],
                                                             minutes_after_open: int) -> None:
    cut = SESSION.open + timedelta(minutes=minutes_after_open)
    later = pl.col("ts") > cut
    trades = day["trades"].with_columns(
        price=pl.when(later).then(pl.col("price") * 1.3).otherwise(pl.col("price")),
        size=pl.when(later).then(pl.col("size") * 7).otherwise(pl.col("size")),
    )
    quotes = day["quotes"].filter(~later | (pl.col("symbol") == "AAA"))
    bars = day["bars"].filter(~later)
    moved = market_features(bars_1m(trades, quotes, SESSION), SESSION, bars=bars)
    keep = pl.col("ts") <= cut
    assert moved.filter(keep).equals(day["market"].filter(keep))
    # The perturbation does reach the later rows, so the equality above is not vacuous.
    assert not moved.filter(~keep).equals(day["market"].filter(~keep))


def _rsi_reference(close: list[float], period: int = 14) -> list[float | None]:
    alpha, out = 1.0 / period, [None] * len(close)
    gain = loss = None
    for i in range(1, len(close)):
        change = close[i] - close[i - 1]
        up, down = max(change, 0.0), max(-change, 0.0)
        gain = up if gain is None else (1 - alpha) * gain + alpha * up
        loss = down if loss is None else (1 - alpha) * loss + alpha * down
        if i >= period:
            out[i] = 100.0 * gain / (gain + loss) if gain + loss > 0 else 50.0
    return out


def _ema(values: list[float | None], span: int) -> list[float | None]:
    alpha, level, out = 2.0 / (span + 1), None, []
    for value in values:
        if value is not None:
            level = value if level is None else (1 - alpha) * level + alpha * value
        out.append(level)
    return out


def test_rsi_and_macd_match_a_loop_reference(day: dict[str, pl.DataFrame]) -> None:
    for symbol in ("AAA", "DDD"):
        rows = _symbol(day["market"], symbol)
        close = _symbol(day["bars_1m"], symbol)["close"].to_list() if symbol == "AAA" else (
            _symbol(day["bars"], symbol)["close"].to_list())
        _assert_close(rows["rsi_14"].to_list(), _rsi_reference(close), abs_tol=1e-9)
        fast, slow = _ema(close, 12), _ema(close, 26)
        macd = [f - s if i >= 25 else None for i, (f, s) in enumerate(zip(fast, slow, strict=True))]
        signal = _ema(macd, 9)
        signal = [s if i >= 25 + 8 else None for i, s in enumerate(signal)]
        _assert_close(rows["macd"].to_list(), macd)
        _assert_close(rows["macd_signal"].to_list(), signal)
        hist = [m - s if s is not None else None for m, s in zip(macd, signal, strict=True)]
        _assert_close(rows["macd_hist"].to_list(), hist)


def test_turbulence_matches_a_numpy_reference(day: dict[str, pl.DataFrame]) -> None:
    closes = day["market"].filter(pl.col("bar_interval") == "1m").select("symbol", "ts").join(
        # raw.bars are stamped at their start; the one-minute ones enter the turbulence at their end.
        pl.concat([day["bars_1m"].select("symbol", "ts", "close"),
                   day["bars"].select("symbol", pl.col("ts") + timedelta(minutes=1), "close")]),
        on=["symbol", "ts"],
    ).pivot(on="symbol", index="ts", values="close").sort("ts")
    matrix = closes.drop("ts").to_numpy()
    returns = np.log(matrix[1:] / matrix[:-1])
    window, n = TURBULENCE_WINDOW_MIN, matrix.shape[1]
    expected = [None] * len(matrix)
    for t in range(window + 1, len(matrix)):
        history = returns[t - 1 - window:t - 1]
        mean = history.mean(axis=0)
        cov = np.cov(history, rowvar=False)
        cov = cov + TURBULENCE_RIDGE * np.trace(cov) / n * np.eye(n)
        deviation = returns[t - 1] - mean
        expected[t] = float(deviation @ np.linalg.inv(cov) @ deviation)
    got = _symbol(day["market"], "AAA")["turbulence_index"].to_list()
    _assert_close(got, expected, rel=1e-7)
    assert got[window] is None and got[window + 1] is not None
    # The same value on every symbol's row at a minute, bar-only symbols included.
    per_minute = day["market"].group_by("ts").agg(pl.col("turbulence_index").drop_nulls().n_unique())
    assert per_minute["turbulence_index"].max() == 1


def test_bar_only_symbols_get_rows_with_bar_features(day: dict[str, pl.DataFrame]) -> None:
    market = day["market"]
    minute_only, five, daily = _symbol(market, "DDD"), _symbol(market, "EEE"), _symbol(market, "FFF")
    assert minute_only.height == 390 and (minute_only["bar_interval"] == "1m").all()
    assert five.height == 78 and five["ts"][0] == SESSION.open + timedelta(minutes=5)
    assert daily.height == 1 and daily["ts"][0] == SESSION.close and daily["bar_interval"][0] == "1d"
    for tick_only in ("quoted_spread", "kyle_lambda_30m", "trade_sign_imbalance", "effective_spread_bps"):
        assert minute_only[tick_only].null_count() == minute_only.height, tick_only
    for bar_level in ("log_return_15m", "rsi_14", "realized_vol_30m", "amihud_illiquidity_30m", "adx_14"):
        assert minute_only[bar_level].drop_nulls().len() > 300, bar_level
    # Coarser bars: windows in minutes become bars, so a 5-minute return is one 5m bar.
    eee = _symbol(day["bars"], "EEE")["close"]
    assert five["log_return_5m"][1] == pytest.approx(math.log(eee[1] / eee[0]))
    assert daily["bar_range_bps"][0] == pytest.approx(1e4 * 1.5 / 10.5)
    assert daily["turbulence_index"][0] is not None


def test_start_stamped_bars_are_shifted_to_their_end(day: dict[str, pl.DataFrame]) -> None:
    start = raw_bars("DDD", "5m", 5)
    bars = start.with_columns(pl.col("ts") + timedelta(minutes=5))
    end_rows = market_features(day["bars_1m"], SESSION, bars=bars, bar_ts="end")
    start_rows = market_features(day["bars_1m"], SESSION, bars=start)
    assert start_rows.equals(end_rows)
    # A bar starting at the open is first seen at its end, never at the open.
    assert _symbol(start_rows, "DDD")["ts"][0] == SESSION.open + timedelta(minutes=5)


def test_unknown_bar_interval_says_what_to_use(day: dict[str, pl.DataFrame]) -> None:
    with pytest.raises(ValueError, match="interval 'weekly'.*'5m'"):
        market_features(day["bars_1m"], SESSION, bars=raw_bars("DDD", "weekly", 5))


def test_windows_are_null_until_filled_then_set(day: dict[str, pl.DataFrame]) -> None:
    aaa = _symbol(day["market"], "AAA")
    for column, first in (("log_return_1m", 1), ("log_return_60m", 60), ("realized_vol_60m", 60),
                          ("volume_zscore_30m", 29), ("kyle_lambda_30m", 30)):
        values = aaa[column].to_list()
        assert all(v is None for v in values[:first]), column
        assert values[first] is not None, column


def test_no_nan_or_inf_even_on_flat_prices_and_empty_books(day: dict[str, pl.DataFrame]) -> None:
    flat = market_features(
        bars_1m(day["trades"].with_columns(price=pl.lit(10.0)),
                day["quotes"].with_columns(bid=pl.lit(9.99), ask=pl.lit(10.01), bid_size=pl.lit(0.0),
                                           ask_size=pl.lit(0.0)), SESSION),
        SESSION, bars=day["bars"],
    )
    for frame in (day["market"], flat):
        for column, dtype in frame.schema.items():
            if dtype == pl.Float64:
                assert frame[column].is_nan().sum() == 0, column
                assert frame[column].is_infinite().sum() == 0, column
    # A flat market is not trending and has no volatility.
    flat_aaa = _symbol(flat, "AAA")
    assert flat_aaa["realized_vol_30m"].drop_nulls().max() == 0.0
    assert flat_aaa["rsi_14"].drop_nulls().unique().to_list() == [50.0]


def test_output_columns_and_group_sizes(day: dict[str, pl.DataFrame]) -> None:
    assert day["market"].columns == [*KEY_COLUMNS, *market_feature_names()]
    assert len(features_of(MARKET, "microstructure")) >= 15
    assert len(features_of(MARKET, "momentum")) >= 12
    assert len(features_of(MARKET, "volatility")) >= 4
    assert {f.name for f in features_of(MARKET, "regime")} >= {"regime_trend_score", "regime_trending"}
    assert [f.name for f in features_of(MARKET, "turbulence")] == ["turbulence_index", "turbulence_index_daily"]
    flags = day["market"]["regime_trending"].drop_nulls().unique().sort().to_list()
    assert set(flags) <= {0, 1} and flags
    assert day["market"].select(pl.len().over("symbol", "ts").max()).item() == 1


def test_a_bar_only_symbol_with_several_intervals_keeps_its_finest(day: dict[str, pl.DataFrame]) -> None:
    both = pl.concat([raw_bars("DDD", "5m", 5), raw_bars("DDD", "1m", 1)])
    rows = _symbol(market_features(day["bars_1m"], SESSION, bars=both), "DDD")
    assert rows.height == 390 and rows["bar_interval"].unique().to_list() == ["1m"]


def test_no_ticks_and_no_bars_give_an_empty_frame_with_every_column(day: dict[str, pl.DataFrame]) -> None:
    out = market_features(day["bars_1m"].clear(), SESSION, bars=day["bars"].clear())
    assert out.is_empty() and out.columns == [*KEY_COLUMNS, *market_feature_names()]


def test_a_date_only_daily_bar_is_one_row_at_the_close(day: dict[str, pl.DataFrame]) -> None:
    dated = daily_bar("FFF").with_columns(pl.col("ts").dt.date())
    rows = _symbol(market_features(day["bars_1m"], SESSION, bars=dated), "FFF")
    assert rows["ts"].to_list() == [SESSION.close]
    assert rows["bar_range_bps"][0] == pytest.approx(1e4 * 1.5 / 10.5)
