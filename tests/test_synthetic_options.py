"""Option chains of the synthetic market and the Black-Scholes functions they are priced with."""

from __future__ import annotations

import math
from datetime import date

import numpy as np
import polars as pl
import pytest

from pipeline.contract.black_scholes import bs_greeks, bs_price, implied_vol
from pipeline.contract.calendar import trading_session
from pipeline.contract.occ import occ_symbol
from pipeline.contract.schemas import RAW_COLUMNS
from pipeline.synthetic.config import SyntheticMarketConfig
from pipeline.synthetic.options import expiries
from pipeline.synthetic.source import SyntheticMarket

DAY = trading_session(date(2024, 7, 5))
RATE = 0.04


@pytest.fixture(scope="module")
def chain() -> pl.DataFrame:
    market = SyntheticMarket()
    return market.fetch("option_snapshots", DAY, ["SYMA", "SYMB"])


def test_black_scholes_matches_reference_values() -> None:
    # Hull's textbook example: S=K=100, T=1, r=5%, vol=20%.
    assert bs_price(100.0, 100.0, 1.0, 0.05, 0.2, True) == pytest.approx(10.4506, abs=1e-4)
    assert bs_price(100.0, 100.0, 1.0, 0.05, 0.2, False) == pytest.approx(5.5735, abs=1e-4)


def test_greeks_match_finite_differences() -> None:
    spot, strike = np.array([90.0, 100.0, 117.0, 100.0]), np.array([100.0, 95.0, 110.0, 130.0])
    t, vol = np.array([0.05, 0.3, 1.2, 0.5]), np.array([0.25, 0.4, 0.18, 0.6])
    for is_call in (True, False):
        greeks = bs_greeks(spot, strike, t, RATE, vol, is_call)

        def price(
            s: np.ndarray = spot, tt: np.ndarray = t, v: np.ndarray = vol, call: bool = is_call
        ) -> np.ndarray:
            return bs_price(s, strike, tt, RATE, v, call)

        h = 1e-4 * spot
        delta = (price(s=spot + h) - price(s=spot - h)) / (2 * h)
        gamma = (price(s=spot + h) - 2 * price() + price(s=spot - h)) / h**2
        day = 1 / 365
        theta = (price(tt=t - 1e-3 * day) - price(tt=t + 1e-3 * day)) / (2e-3)
        vega = (price(v=vol + 1e-4) - price(v=vol - 1e-4)) / 2e-4 / 100
        np.testing.assert_allclose(greeks["delta"], delta, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(greeks["gamma"], gamma, rtol=1e-3, atol=1e-6)
        np.testing.assert_allclose(greeks["theta"], theta, rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(greeks["vega"], vega, rtol=1e-5, atol=1e-7)


def test_implied_vol_inverts_the_price() -> None:
    vols = np.array([0.1, 0.3, 0.9])
    prices = bs_price(100.0, np.array([90.0, 100.0, 120.0]), 0.25, RATE, vols, True)
    np.testing.assert_allclose(implied_vol(prices, 100.0, np.array([90.0, 100.0, 120.0]), 0.25, RATE, True), vols,
                               atol=1e-8)
    assert math.isnan(implied_vol(200.0, 100.0, 100.0, 0.25, RATE, True)[()])


def test_chain_layout(chain: pl.DataFrame) -> None:
    assert chain.schema == pl.Schema(RAW_COLUMNS["option_snapshots"])
    times = chain["ts"].unique().sort()
    assert times[0] == DAY.open.replace(minute=45) and times[-1] == DAY.close and len(times) == 26
    assert (chain["expiry"] >= DAY.trading_day).all()
    assert chain["expiry"].n_unique() == 6 and chain["expiry"].min() == DAY.trading_day  # a same-day expiry
    per_snapshot = chain.filter((pl.col("underlying") == "SYMA") & (pl.col("ts") == times[0]))
    assert per_snapshot.height == 6 * 15 * 2
    assert chain["contract"].str.contains(r"^[A-Z ]{6}\d{6}[CP]\d{8}$").all()
    assert chain.select(pl.struct("contract", "ts").is_unique().all()).item()
    assert occ_symbol("SYMA", date(2024, 7, 19), "C", 100.0) == "SYMA  240719C00100000"


def test_quotes_surround_the_model_price_and_greeks_are_consistent(chain: pl.DataFrame) -> None:
    calls = chain["right"].to_numpy() == "C"
    spot, strike = chain["underlying_price"].to_numpy(), chain["strike"].to_numpy()
    expiry_close = {e: trading_session(e).close for e in chain["expiry"].unique()}
    close_s = np.array([expiry_close[e].timestamp() for e in chain["expiry"]])
    # A same-day expiry at the close is priced with the minute the market leaves it.
    t = np.maximum((close_s - chain["ts"].dt.epoch("s").to_numpy()) / (365 * 86400), 1 / (365 * 24 * 60))
    model = bs_price(spot, strike, t, RATE, chain["iv"].to_numpy(), calls)
    assert (chain["bid"] < chain["ask"]).all()
    assert (chain["bid"].to_numpy() <= model + 1e-9).all() and (model <= chain["ask"].to_numpy() + 1e-9).all()
    assert ((chain["last"] >= chain["bid"]) & (chain["last"] <= chain["ask"])).all()
    h = 0.01
    fd_delta = (bs_price(spot + h, strike, t, RATE, chain["iv"].to_numpy(), calls)
                - bs_price(spot - h, strike, t, RATE, chain["iv"].to_numpy(), calls)) / (2 * h)
    # A cent is no small step for a contract minutes from expiry (its gamma is huge): check those an hour out.
    hour_left = t > 1 / (365 * 24)
    np.testing.assert_allclose(chain["delta"].to_numpy()[hour_left], fd_delta[hour_left], atol=1e-4)
    assert ((chain["gamma"] > 0) & (chain["vega"] > 0)).all()


def test_surface_has_put_skew_and_volume_accumulates(chain: pl.DataFrame) -> None:
    first = chain.filter((pl.col("underlying") == "SYMA") & (pl.col("ts") == pl.col("ts").min()))
    near = first.filter(pl.col("expiry") == pl.col("expiry").min()).sort("strike")
    assert near["iv"][0] > near["iv"][len(near) // 2]  # low strikes carry more IV
    by_contract = chain.sort("ts").group_by("contract").agg(pl.col("volume").diff().min().alias("step"))
    assert (by_contract["step"].drop_nulls() >= 0).all()
    assert (chain["open_interest"] >= 0).all()


def test_expiries_roll_holiday_fridays_back() -> None:
    # 2025-04-18 is Good Friday: the weekly expiring that week moves to Thursday 2025-04-17.
    assert expiries(date(2025, 4, 11), (7,)) == [date(2025, 4, 17)]
    assert expiries(date(2024, 7, 5), (7, 14)) == [date(2024, 7, 12), date(2024, 7, 19)]
    assert expiries(date(2024, 7, 8), (0, 7)) == [date(2024, 7, 8), date(2024, 7, 19)]


def test_a_session_shorter_than_the_snapshot_interval_has_an_empty_chain() -> None:
    # 2024-07-03 closes at 13:00 (210 minutes): hourly-and-a-half snapshots fit, 390-minute ones do not.
    early_close = trading_session(date(2024, 7, 3))
    market = SyntheticMarket(SyntheticMarketConfig(snapshot_minutes=390))
    chain = market.fetch("option_snapshots", early_close, ["SPY"])
    assert chain.is_empty() and chain.columns == list(RAW_COLUMNS["option_snapshots"])
    full_day = market.fetch("option_snapshots", trading_session(date(2024, 7, 5)), ["SPY"])
    assert full_day.height > 0 and full_day["ts"].n_unique() == 1
