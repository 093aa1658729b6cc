"""features.bars_1m: the session grid, bar boundaries (ts is the minute END), trade signing and quote stats."""

from __future__ import annotations

import math
from datetime import timedelta

import polars as pl
import pytest
from features_testdata import SESSION, ticks

from pipeline.contract.schemas import RAW_COLUMNS, conform
from pipeline.features import bars_1m
from pipeline.features.bars import BARS_1M_COLUMNS

OPEN = SESSION.open


def _trades(rows: list[tuple[float, float, float]]) -> pl.DataFrame:
    """(seconds after the open, price, size) for symbol AAA."""
    return conform("trades", pl.DataFrame({
        "symbol": "AAA", "ts": [OPEN + timedelta(seconds=s) for s, _, _ in rows],
        "price": [p for _, p, _ in rows], "size": [q for _, _, q in rows], "exchange": "X", "conditions": "",
        "source": "test", "trading_day": SESSION.trading_day,
    }))


def _quotes(rows: list[tuple[float, float, float, float, float]]) -> pl.DataFrame:
    """(seconds after the open, bid, ask, bid_size, ask_size) for symbol AAA."""
    return conform("quotes", pl.DataFrame({
        "symbol": "AAA", "ts": [OPEN + timedelta(seconds=r[0]) for r in rows],
        "bid": [r[1] for r in rows], "ask": [r[2] for r in rows], "bid_size": [r[3] for r in rows],
        "ask_size": [r[4] for r in rows], "source": "test", "trading_day": SESSION.trading_day,
    }))


@pytest.fixture(scope="module")
def hand_bars() -> pl.DataFrame:
    quotes = _quotes([(0, 9.99, 10.01, 300, 100), (61, 10.09, 10.11, 100, 100), (150, 10.19, 10.21, 0, 0)])
    trades = _trades([
        (0, 10.01, 100),      # at the open, at the ask (buy): first bar
        (30, 9.99, 300),      # at the bid (sell)
        (60, 10.00, 100),     # exactly 09:31:00: still the first bar (ts-1min, ts]; at the mid -> tick rule: buy
        (60.5, 10.11, 200),   # the second bar, at the ask
    ])
    return bars_1m(trades, quotes, SESSION)


def test_grid_is_every_minute_end_of_the_session(hand_bars: pl.DataFrame) -> None:
    assert hand_bars.columns == list(BARS_1M_COLUMNS)
    assert hand_bars.height == SESSION.minutes == 390
    assert hand_bars["ts"][0] == OPEN + timedelta(minutes=1)
    assert hand_bars["ts"][-1] == SESSION.close
    assert hand_bars.schema["ts"] == RAW_COLUMNS["trades"]["ts"]
    assert hand_bars["trading_day"].unique().to_list() == [SESSION.trading_day]


def test_bar_ohlcv_vwap_and_trade_signs(hand_bars: pl.DataFrame) -> None:
    first, second, third = (hand_bars.row(i, named=True) for i in range(3))
    assert (first["open"], first["high"], first["low"], first["close"]) == (10.01, 10.01, 9.99, 10.00)
    assert first["volume"] == 500 and first["trade_count"] == 3
    assert first["vwap"] == pytest.approx((10.01 * 100 + 9.99 * 300 + 10.00 * 100) / 500)
    # Buy 100 at the ask, sell 300 at the bid, and the trade at the mid ticks up from 9.99 (tick rule): buy.
    assert first["buy_volume"] == 200 and first["sell_volume"] == 300
    assert first["trade_sign_imbalance"] == pytest.approx((200 - 300) / 500)
    assert first["bid"] == 9.99 and first["ask"] == 10.01
    assert first["depth_imbalance_last"] == pytest.approx((300 - 100) / 400)
    assert first["spread_last_bps"] == pytest.approx(1e4 * 0.02 / 10.0)
    assert second["close"] == 10.11 and second["buy_volume"] == 200 and second["trade_count"] == 1
    assert second["bid"] == 10.09
    # No trades in the third minute: the price carries over with zero volume; sizes 0/0 give null, not NaN.
    assert third["trade_count"] == 0 and third["volume"] == 0.0
    assert third["open"] == third["close"] == third["vwap"] == 10.11
    assert third["trade_sign_imbalance"] is None
    assert third["depth_imbalance_last"] is None and third["bid"] == 10.19


def test_effective_spread_is_size_weighted(hand_bars: pl.DataFrame) -> None:
    first = hand_bars.row(0, named=True)
    expected = (2e4 * 0.01 / 10.0 * 100 + 2e4 * 0.01 / 10.0 * 300 + 0 * 100) / 500
    assert first["effective_spread_bps"] == pytest.approx(expected)


def test_bar_at_ts_uses_only_ticks_at_or_before_ts() -> None:
    trades, quotes = ticks(["AAA", "BBB"], trades_per_symbol=1500)
    cut = OPEN + timedelta(minutes=95)
    full = bars_1m(trades, quotes, SESSION)
    later = pl.col("ts") > cut
    moved = bars_1m(
        trades.with_columns(price=pl.when(later).then(pl.col("price") * 1.3).otherwise(pl.col("price"))),
        quotes.filter(~later), SESSION,
    )
    keep = pl.col("ts") <= cut
    assert full.filter(keep).equals(moved.filter(keep))
    assert not full.filter(~keep).equals(moved.filter(~keep))


def test_random_day_has_no_nan_or_inf_and_any_zone_is_accepted() -> None:
    trades, quotes = ticks(["AAA", "BBB", "CCC"], trades_per_symbol=2000)
    bars = bars_1m(trades, quotes, SESSION)
    assert bars.height == 3 * 390
    for column, dtype in bars.schema.items():
        if dtype == pl.Float64:
            values = bars[column].drop_nulls().to_list()
            assert all(math.isfinite(v) for v in values), column
    eastern = bars_1m(trades.with_columns(pl.col("ts").dt.convert_time_zone("America/New_York")),
                      quotes.with_columns(pl.col("ts").dt.convert_time_zone("America/New_York")), SESSION)
    assert eastern.equals(bars)
    assert bars["volume"].sum() == pytest.approx(trades["size"].sum())


def test_empty_ticks_give_an_empty_grid() -> None:
    empty_trades = pl.DataFrame(schema=RAW_COLUMNS["trades"])
    empty_quotes = pl.DataFrame(schema=RAW_COLUMNS["quotes"])
    out = bars_1m(empty_trades, empty_quotes, SESSION)
    assert out.is_empty() and out.columns == list(BARS_1M_COLUMNS)
