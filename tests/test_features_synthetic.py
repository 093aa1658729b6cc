"""Features on the embedded synthetic market: a real-shaped day (early close included) stays point in time."""

from __future__ import annotations

from datetime import date, timedelta

import polars as pl
import pytest

from pipeline.contract.calendar import trading_session
from pipeline.features import bars_1m, market_features, options_features
from pipeline.features.catalog import MARKET, features_of, market_feature_names
from pipeline.features.windows import TRADING_DAYS
from pipeline.synthetic.config import SyntheticMarketConfig
from pipeline.synthetic.source import SyntheticMarket

SYMBOLS = ["SYMA", "SYMB", "SYMC"]


@pytest.fixture(scope="module", params=[date(2024, 7, 8), date(2024, 7, 3)], ids=["full-day", "early-close"])
def synthetic_day(request: pytest.FixtureRequest) -> tuple:
    session = trading_session(request.param)
    market = SyntheticMarket(SyntheticMarketConfig())
    trades = market.fetch("trades", session, SYMBOLS)
    quotes = market.fetch("quotes", session, SYMBOLS)
    return session, trades, quotes, market_features(bars_1m(trades, quotes, session), session)


def test_one_row_per_symbol_minute_and_filled_after_the_longest_window(synthetic_day: tuple) -> None:
    session, _, _, features = synthetic_day
    assert features.height == len(SYMBOLS) * session.minutes
    assert features["ts"].max() == session.close
    # After the longest window (60 min + MACD/ADX warm-up) every intraday feature of a liquid symbol is set;
    # the daily ones need earlier sessions, which this call does not pass.
    settled = features.filter(pl.col("ts") > session.open + timedelta(minutes=80))
    daily = {f.name for f in features_of(MARKET) if f.window.unit == TRADING_DAYS}
    nulls = {c: settled[c].null_count() for c in market_feature_names() if settled[c].null_count()}
    assert nulls == dict.fromkeys(sorted(daily), settled.height)
    for column, dtype in features.schema.items():
        if dtype == pl.Float64:
            assert features[column].is_nan().sum() == 0 and features[column].is_infinite().sum() == 0, column


def test_deleting_ticks_after_t_leaves_earlier_rows_identical(synthetic_day: tuple) -> None:
    session, trades, quotes, features = synthetic_day
    cut = session.open + timedelta(minutes=session.minutes // 2)
    early = pl.col("ts") <= cut
    truncated = market_features(bars_1m(trades.filter(early), quotes.filter(early), session), session)
    assert truncated.filter(early).equals(features.filter(early))
    assert not truncated.filter(~early).equals(features.filter(~early))


def test_options_features_on_synthetic_chains_match_a_direct_lookup() -> None:
    session = trading_session(date(2024, 7, 8))
    chain = SyntheticMarket(SyntheticMarketConfig()).fetch("option_snapshots", session, SYMBOLS[:2])
    out = options_features(chain)
    assert out.height == chain.select("underlying", "ts").n_unique()
    # The synthetic surface has a put skew, so 25-delta puts are richer than 25-delta calls.
    assert (out["skew_25d"] > 0).all() and out["atm_iv"].is_not_null().all()
    assert (out["near_expiry_days"] >= 7).all()
    for row in out.head(3).iter_rows(named=True):
        snap = chain.filter((pl.col("underlying") == row["underlying"]) & (pl.col("ts") == row["ts"]))
        near = snap.filter((pl.col("expiry") - pl.lit(session.trading_day)).dt.total_days() >= 7)
        near = near.filter(pl.col("expiry") == near["expiry"].min())
        strike = near.sort((pl.col("strike") - pl.col("underlying_price")).abs())["strike"][0]
        assert row["atm_iv"] == pytest.approx(near.filter(pl.col("strike") == strike)["iv"].mean())
        assert row["contract_count"] == snap.height
