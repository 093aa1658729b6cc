"""Windows that reach into earlier sessions: point in time at the day boundary, units, and the catalog's warm-ups."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta

import polars as pl
import pytest
from features_testdata import SESSION, daily_bar, raw_bars, ticks

from pipeline.contract.calendar import TradingSession, trading_session
from pipeline.features import bars_1m, market_features, market_history
from pipeline.features.catalog import MARKET, features_of
from pipeline.features.lookback import LOOKBACK_TRADING_DAYS, row_lookback_sessions
from pipeline.features.model_features import market_features_days
from pipeline.features.windows import BAR_COUNT, MINUTES, TRADING_DAYS, WINDOW_UNITS
from pipeline.synthetic.config import SyntheticMarketConfig
from pipeline.synthetic.source import SyntheticMarket

SYMBOLS = ["SPY", "QQQ"]
# D-1, D (an early close: the day before Independence Day) and D+1.
DAYS = (date(2024, 7, 2), date(2024, 7, 3), date(2024, 7, 5))
NOON_UTC = datetime(2024, 7, 3, 16, 0, tzinfo=UTC)  # 12:00 New York (EDT)


@pytest.fixture(scope="module")
def market() -> dict:
    sessions = [trading_session(day) for day in DAYS]
    source = SyntheticMarket(SyntheticMarketConfig())
    trades = pl.concat([source.fetch("trades", s, SYMBOLS) for s in sessions])
    quotes = pl.concat([source.fetch("quotes", s, SYMBOLS) for s in sessions])
    # Bar-only symbols on one-minute, 5-minute and daily bars ride along.
    bars = pl.concat([raw_bars("ONE", "1m", 1, seed=i, session=s) for i, s in enumerate(sessions)]
                     + [raw_bars("FIVE", "5m", 5, session=s) for s in sessions]
                     + [_daily(s, 20.0 + i) for i, s in enumerate(sessions)])
    frame = _features(sessions, trades, quotes, bars)
    return {"sessions": sessions, "trades": trades, "quotes": quotes, "bars": bars, "features": frame}


def _daily(session: TradingSession, close: float) -> pl.DataFrame:
    return daily_bar("DAILY", session).with_columns(open=pl.lit(close), high=pl.lit(close + 1),
                                                   low=pl.lit(close - 1), close=pl.lit(close))


def _features(sessions: list[TradingSession], trades: pl.DataFrame, quotes: pl.DataFrame, bars: pl.DataFrame) -> pl.DataFrame:
    minute_bars = pl.concat([bars_1m(trades.filter(pl.col("trading_day") == s.trading_day),
                                     quotes.filter(pl.col("trading_day") == s.trading_day), s) for s in sessions])
    return market_features_days(sessions, minute_bars, bars)


def _later_than(ts: datetime) -> pl.Expr:
    return pl.col("ts") > ts


def test_perturbing_the_next_day_changes_nothing_on_the_day_or_before(market: dict) -> None:
    next_day = pl.col("trading_day") == DAYS[2]
    trades = market["trades"].with_columns(price=pl.when(next_day).then(pl.col("price") * 1.3).otherwise("price"))
    quotes = market["quotes"].with_columns(
        bid=pl.when(next_day).then(pl.col("bid") * 1.3).otherwise("bid"),
        ask=pl.when(next_day).then(pl.col("ask") * 1.3).otherwise("ask"),
    )
    bars = market["bars"].with_columns(close=pl.when(next_day).then(pl.col("close") * 2).otherwise("close"))
    moved = _features(market["sessions"], trades, quotes, bars)
    before = pl.col("trading_day") <= DAYS[1]
    assert moved.filter(before).equals(market["features"].filter(before))
    assert not moved.filter(~before).equals(market["features"].filter(~before))


def test_perturbing_the_day_after_noon_changes_nothing_up_to_noon(market: dict) -> None:
    after = _later_than(NOON_UTC)
    trades = market["trades"].with_columns(
        price=pl.when(after).then(pl.col("price") * 1.2).otherwise("price"),
        size=pl.when(after).then(pl.col("size") * 5).otherwise("size"),
    )
    quotes = market["quotes"].filter(~after | (pl.col("symbol") == "SPY"))
    # D's daily bar closes after noon: it may change; the 5-minute bars from noon on are dropped.
    daily_from_d = (pl.col("trading_day") >= DAYS[1]) & (pl.col("interval") == "1d")
    bars = market["bars"].with_columns(close=pl.when(daily_from_d).then(pl.col("close") * 0.5).otherwise("close"))
    bars = bars.filter(~after | (pl.col("interval") != "5m"))
    moved = _features(market["sessions"], trades, quotes, bars)
    keep = pl.col("ts") <= NOON_UTC
    assert moved.filter(keep).equals(market["features"].filter(keep))
    # The change reaches the afternoon and the next day through its windows and daily closes.
    for day in DAYS[1:]:
        later = (pl.col("trading_day") == day) & ~keep
        assert not moved.filter(later).equals(market["features"].filter(later)), day


def _symbol_day(frame: pl.DataFrame, symbol: str, day: date) -> pl.DataFrame:
    return frame.filter((pl.col("symbol") == symbol) & (pl.col("trading_day") == day)).sort("ts")


def test_minute_windows_reach_into_the_previous_session(market: dict) -> None:
    sessions = market["sessions"]
    closes = [bars_1m(market["trades"].filter(pl.col("trading_day") == s.trading_day),
                      market["quotes"].filter(pl.col("trading_day") == s.trading_day), s)
              .filter(pl.col("symbol") == "SPY").sort("ts")["close"].to_list() for s in sessions]
    first, second = _symbol_day(market["features"], "SPY", DAYS[0]), _symbol_day(market["features"], "SPY", DAYS[1])
    assert first["log_return_60m"][59] is None and first["log_return_60m"][60] is not None
    # At D's first minute, 60 minutes back is 59 minutes before D-1's close, and the overnight gap is left out:
    # D's first bar counts from its own open.
    opens = bars_1m(market["trades"].filter(pl.col("trading_day") == DAYS[1]),
                    market["quotes"].filter(pl.col("trading_day") == DAYS[1]), sessions[1]
                    ).filter(pl.col("symbol") == "SPY").sort("ts")["open"].to_list()
    first_bar = math.log(closes[1][0] / opens[0])
    assert second["log_return_1m"][0] == pytest.approx(first_bar)
    assert second["log_return_60m"][0] == pytest.approx(math.log(closes[0][-1] / closes[0][-60]) + first_bar)
    for column in ("rsi_14", "macd_signal", "adx_14", "realized_vol_60m", "vol_of_vol_30m", "volume_zscore_30m"):
        assert second[column].null_count() == 0, column
    # Session columns restart at the open; daily ones read D-1's close.
    assert second["session_return"][0] == 0.0
    assert second["log_return_1d"][0] == pytest.approx(math.log(closes[1][0] / closes[0][-1]))
    assert first["log_return_1d"].null_count() == first.height


def test_coarser_bars_count_bars_and_drop_minute_windows_shorter_than_a_bar(market: dict) -> None:
    five = market["features"].filter(pl.col("symbol") == "FIVE").sort("ts")
    first_day = five.filter(pl.col("trading_day") == DAYS[0])
    assert five["log_return_1m"].null_count() == five.height  # 1 minute < 5-minute bars
    assert first_day["log_return_5m"][1] is not None
    # RSI 14 is 14 bars on any interval; 60 minutes are 12 five-minute bars.
    assert first_day["rsi_14"][13] is None and first_day["rsi_14"][14] is not None
    assert first_day["log_return_60m"][11] is None and first_day["log_return_60m"][12] is not None
    # One-minute raw bars reach into their own earlier sessions, as tick-derived bars do.
    one = _symbol_day(market["features"], "ONE", DAYS[1])
    assert one["bar_interval"][0] == "1m" and one["log_return_60m"].null_count() == 0
    assert five.filter(pl.col("trading_day") == DAYS[1])["rsi_14"].null_count() == 0
    daily = market["features"].filter(pl.col("symbol") == "DAILY").sort("ts")
    assert daily["log_return_1d"].to_list()[1:] == pytest.approx([math.log(21 / 20), math.log(22 / 21)])
    minute_windows = [f.name for f in features_of(MARKET) if f.window.unit == MINUTES and f.name != "turbulence_index"]
    assert all(daily[c].null_count() == daily.height for c in minute_windows)


def test_the_catalog_warmup_is_where_each_window_first_fills() -> None:
    # One liquid day without history: a minute or bar window of w units warms up over exactly `warmup` rows.
    trades, quotes = ticks(["AAA", "BBB"], trades_per_symbol=20000)
    aaa = market_features(bars_1m(trades, quotes, SESSION), SESSION).filter(pl.col("symbol") == "AAA").sort("ts")
    for feature in features_of(MARKET):
        if feature.window.unit in (MINUTES, BAR_COUNT):
            values = aaa[feature.name]
            assert values.head(feature.window.warmup).null_count() == feature.window.warmup, feature.name
            assert values[feature.window.warmup] is not None, feature.name


def test_every_market_window_has_a_unit_and_the_lookback_covers_the_longest() -> None:
    for feature in features_of(MARKET):
        assert feature.window.unit in (*WINDOW_UNITS, "-"), feature.name
    session_columns = {f.name for f in features_of(MARKET) if f.window.unit == "session"}
    assert session_columns == {"session_return", "session_vwap_deviation_bps", "distance_from_session_high",
                               "distance_from_session_low"}
    daily = max(f.window.warmup for f in features_of(MARKET) if f.window.unit == TRADING_DAYS)
    assert LOOKBACK_TRADING_DAYS == daily == 253  # FinRL's 252-day turbulence window and the close before it
    # Daily bars reach back as far as RSI 30 and DX 30 take to settle (their seed weighs under 0.1%), which still
    # fits in one session of minutes.
    assert row_lookback_sessions(1) == 1 and row_lookback_sessions(24 * 60) == 204


def test_a_history_must_be_earlier_than_the_day(market: dict) -> None:
    session = market["sessions"][1]
    minute_bars = bars_1m(market["trades"].filter(pl.col("trading_day") == DAYS[1]),
                          market["quotes"].filter(pl.col("trading_day") == DAYS[1]), session)
    with pytest.raises(ValueError, match="may only look back"):
        market_features(minute_bars, session, history=market_history([session], minute_bars))
    # One earlier day: the same rows as market_features_days gives D with D-1 before it.
    earlier = market["sessions"][0]
    earlier_bars = bars_1m(market["trades"].filter(pl.col("trading_day") == DAYS[0]),
                           market["quotes"].filter(pl.col("trading_day") == DAYS[0]), earlier)
    one = market_features(minute_bars, session, history=market_history([earlier], earlier_bars))
    assert one.equals(_features_without_bars(market, session))
    assert one.filter(pl.col("ts") <= session.open + timedelta(minutes=1))["log_return_1d"].null_count() == 0


def _features_without_bars(market: dict, session: TradingSession) -> pl.DataFrame:
    sessions = market["sessions"][:2]
    frame = _features(sessions, market["trades"], market["quotes"], market["bars"].clear())
    return frame.filter(pl.col("trading_day") == session.trading_day)

