"""IBKROptionChains against a fake ib_async IB returning ib_async's own OptionChain, Contract and Ticker objects."""

from __future__ import annotations

import math
import random
from datetime import UTC, date, datetime

import polars as pl
import pytest
from ib_async import IB, RequestError, Ticker

from pipeline.contract.black_scholes import bs_greeks
from pipeline.contract.calendar import trading_session
from pipeline.contract.schemas import RAW_COLUMNS
from pipeline.contract.validation import validate
from pipeline.sources.base import SourceError, SourceSubscriptionError, SourceUnavailableError
from pipeline.sources.ibkr_connection import retry_policy
from pipeline.sources.ibkr_options import IBKROptionChains, chain_pacer
from tests.fakes.ib import FakeClock
from tests.fakes.ib_options import FakeChainIB, weekly_chain

DAY = date(2024, 7, 5)  # a Friday: that day's expiry is the nearest (0DTE)
NOW = datetime(2024, 7, 5, 15, 0, tzinfo=UTC)  # 11:00 New York, inside the session
SPOT = 550.3


def _ib(**kwargs: object) -> FakeChainIB:
    return FakeChainIB(spots={"SPY": SPOT}, chains={"SPY": weekly_chain("SPY", 756733, DAY, SPOT)}, today=DAY,
                       **kwargs)


def _chains(ib: FakeChainIB, clock: FakeClock | None = None, **settings: object) -> IBKROptionChains:
    clock = clock or FakeClock()
    ib.clock = clock
    pacer = chain_pacer()
    pacer.clock, pacer.sleep = clock, clock.sleep
    retry = retry_policy()
    retry.sleep, retry.rng = clock.sleep, random.Random(0)
    return IBKROptionChains("127.0.0.1", 7497, 18, ib_factory=lambda: ib, clock=lambda: NOW, pacer=pacer,
                            retry=retry, **settings)


def test_chain_of_one_underlying_around_spot_validates_in_the_session() -> None:
    ib = _ib()
    frame = _chains(ib, market_data_type=3).current_chain(["SPY"])
    assert frame.columns == list(RAW_COLUMNS["option_snapshots"])
    assert ib.market_data_type == 3 and ib.disconnect_calls == 1
    assert sorted(set(frame["expiry"])) == [date(2024, 7, 5), date(2024, 7, 12), date(2024, 7, 19)]
    assert sorted(set(frame["strike"])) == [float(k) for k in range(545, 556)]  # the 11 strikes nearest 550.3
    assert frame.group_by("right").len().sort("right").rows() == [("C", 33), ("P", 33)]
    assert set(frame["ts"]) == {NOW} and set(frame["trading_day"]) == {DAY}
    assert set(frame["source"]) == {"ibkr"} and set(frame["underlying_price"]) == {SPOT}
    assert not frame["reconstructed"].any() and frame["null_reason"].is_null().all()
    assert frame["delayed"].all()  # market data type 3: delayed quotes, older than ts
    assert not _chains(_ib()).current_chain(["SPY"])["delayed"].any()  # the default, live
    row = frame.filter((pl.col("expiry") == date(2024, 7, 12)) & (pl.col("strike") == 550.0)
                       & (pl.col("right") == "P")).row(0, named=True)
    assert row["contract"] == "SPY   240712P00550000"
    # The model greeks land unconverted: IB's units are the project's (theta per day, vega per vol point).
    t = (7 + 0.3) / 365
    expected = bs_greeks(SPOT, 550.0, t, 0.05, 0.15 + 0.5 * abs(550.0 / SPOT - 1.0), False)
    for greek in ("delta", "gamma", "theta", "vega"):
        assert row[greek] == pytest.approx(float(expected[greek]), rel=1e-12)
    assert -1.0 < row["theta"] < 0.0 < row["vega"] < 1.0  # per day and per vol point, not per year or per 1.0
    assert row["open_interest"] is None  # a snapshot cannot ask for generic tick 101
    result = validate("option_snapshots", frame, trading_session(DAY))
    assert result.rows_rejected == 0 and result.rows_accepted == 66


def test_ib_model_greeks_are_in_the_project_units() -> None:
    """A model-greeks ticker from ib_async's option-chain notebook (SPX 3205 put, 31 Dec 2019 16:58 UTC, expiring
    17 Jan 2020 at the open) against bs_greeks: per-year theta or per-1.0 vega would be off by 365x or 100x."""
    ib_greeks = {"delta": -0.44711612427890945, "gamma": 0.004499237656712854, "vega": 2.7587969178159018,
                 "theta": -0.9446458451581966}
    years = (datetime(2020, 1, 17, 14, 30, tzinfo=UTC) - datetime(2019, 12, 31, 16, 58, tzinfo=UTC)).total_seconds() / (365 * 86400)
    ours = bs_greeks(3216.19, 3205.0, years, 0.016, 0.12597515955300287, False)
    for greek, value in ib_greeks.items():
        assert float(ours[greek]) == pytest.approx(value, rel=0.05), greek


def test_batches_respect_the_message_rate_and_market_data_lines() -> None:
    ib, clock = _ib(), FakeClock()
    frame = _chains(ib, clock, batch_size=10).current_chain(["SPY"])
    assert frame.height == 66
    calls = [(r["call"], r["n"]) for r in ib.requests]
    assert calls[:3] == [("qualifyContracts", 1), ("reqTickers", 1), ("reqSecDefOptParams", 0)]
    option_sizes = [10] * 6 + [6]  # 66 contracts in batches of 10
    assert [n for c, n in calls[3:] if c == "qualifyContracts"] == option_sizes
    assert [n for c, n in calls[3:] if c == "reqTickers"] == option_sizes
    # One request (<= 10 messages) per second: the pacer slept 1 s before each but the first.
    assert [r["at"] for r in ib.requests] == [1000.0 + i for i in range(17)]
    assert clock.sleeps == [1.0] * 16


def test_default_settings_request_66_contracts_in_two_batches() -> None:
    ib = _ib()
    frame = _chains(ib).current_chain(["SPY"])
    calls = [(r["call"], r["n"]) for r in ib.requests]
    assert calls == [("qualifyContracts", 1), ("reqTickers", 1), ("reqSecDefOptParams", 0),
                     ("qualifyContracts", 40), ("qualifyContracts", 26), ("reqTickers", 40), ("reqTickers", 26)]
    assert frame.height == 66 and frame["contract"].n_unique() == 66


def test_contracts_tws_does_not_list_are_dropped() -> None:
    ib = _ib(unlisted={("SPY", "20240705", 545.0, "C"), ("SPY", "20240719", 555.0, "P")})
    frame = _chains(ib).current_chain(["SPY"])
    assert frame.height == 64
    assert frame.filter((pl.col("expiry") == date(2024, 7, 5)) & (pl.col("strike") == 545.0))["right"].to_list() == ["P"]


def _no_quote_or_model(ticker: Ticker) -> None:
    if ticker.contract.strike == 545.0:
        ticker.bid, ticker.ask, ticker.last, ticker.volume = -1.0, math.nan, math.nan, math.nan
        ticker.modelGreeks = None
    elif ticker.contract.strike == 546.0:  # IB's "not computed": ib_async maps -2 to None for delta, not vega/theta
        g = ticker.modelGreeks
        ticker.modelGreeks = type(g)(0, None, None, g.optPrice, g.pvDividend, None, -2.0, -2.0, g.undPrice)


def test_missing_quotes_and_greeks_are_null_and_quarantined() -> None:
    frame = _chains(_ib(edit_ticker=_no_quote_or_model)).current_chain(["SPY"])
    empty = frame.filter(pl.col("strike") == 545.0)
    assert empty.height == 6
    for column in ("bid", "ask", "last", "volume", "iv", "delta", "gamma", "theta", "vega"):
        assert empty[column].is_null().all(), column
    no_model = frame.filter(pl.col("strike") == 546.0)
    for column in ("iv", "delta", "gamma", "theta", "vega"):
        assert no_model[column].is_null().all(), column
    assert no_model["bid"].is_not_null().all()
    result = validate("option_snapshots", frame, trading_session(DAY))
    assert result.rows_rejected == 6  # observed rows without a quote are not invented: they are quarantined
    assert result.reason_counts() == {"bid or ask null on a row not marked reconstructed": 6}


def test_unreachable_tws_is_unavailable_and_disconnects() -> None:
    ib = _ib(connect_error=ConnectionRefusedError(111, "Connect call failed"))
    with pytest.raises(SourceUnavailableError, match=r"could not reach TWS/IB Gateway at 127.0.0.1:7497 \(client id 18\)"):
        _chains(ib).current_chain(["SPY"])
    assert ib.disconnect_calls == 1


def test_real_ib_client_against_a_closed_port(refused_port: int) -> None:
    chains = IBKROptionChains("127.0.0.1", refused_port, 29, ib_factory=IB, connect_timeout_s=2.0)
    with pytest.raises(SourceUnavailableError, match="Enable ActiveX and Socket Clients"):
        chains.current_chain(["SPY"])


def test_lost_connection_mid_chain_is_unavailable() -> None:
    ib = _ib(snapshot_error=TimeoutError())  # ib_async raises this when RequestTimeout passes
    with pytest.raises(SourceUnavailableError, match="lost or timed out"):
        _chains(ib).current_chain(["SPY"])
    assert ib.disconnect_calls == 1
    assert [r["call"] for r in ib.requests].count("reqTickers") == 1 + retry_policy().max_attempts  # stock + tries


def test_a_batch_that_timed_out_is_asked_again() -> None:
    ib = _ib(snapshot_failures=[TimeoutError(), RequestError(9, 1102, "Connectivity ... restored - data lost.")])
    frame = _chains(ib).current_chain(["SPY"])
    assert frame.height == 66  # the whole chain, as without the failures
    snapshots = [r["n"] for r in ib.requests if r["call"] == "reqTickers"]
    assert snapshots == [1, 40, 40, 40, 26]  # the stock, then the first batch three times, then the second


@pytest.mark.parametrize(
    ("code", "message", "expected"),
    [
        (354, "Requested market data is not subscribed.", r"no market data subscription .* \(error 354\).*OPRA.*"
                                                          r"market_data_type=3"),
        (101, "Max number of tickers has been reached", r"error 101.*lower batch_size \(now 40\)"),
    ],
)
def test_snapshot_refusals_are_explained(code: int, message: str, expected: str) -> None:
    ib = _ib(snapshot_error=RequestError(9, code, message))
    with pytest.raises(SourceError, match=expected) as err:
        _chains(ib).current_chain(["SPY"])
    assert ib.disconnect_calls == 1
    assert isinstance(err.value, SourceSubscriptionError) == (code == 354)
    assert [r["call"] for r in ib.requests].count("reqTickers") == 2  # the stock, one batch: refusals are final


def test_unknown_symbol_names_it() -> None:
    with pytest.raises(SourceError, match=r"no security definition for 'NOPE' \(error 200\): check the symbol"):
        _chains(_ib()).current_chain(["NOPE"])


def test_underlying_without_options_says_so() -> None:
    ib = FakeChainIB(spots={"BRK A": 600000.0}, chains={}, today=DAY)
    with pytest.raises(SourceError, match="no SMART option chain for BRK A"):
        _chains(ib).current_chain(["BRK A"])


def test_no_underlyings_is_an_empty_frame_without_connecting() -> None:
    ib = _ib(connect_error=ConnectionRefusedError(111, "refused"))
    frame = _chains(ib).current_chain([])
    assert frame.height == 0 and frame.columns == list(RAW_COLUMNS["option_snapshots"])


@pytest.mark.parametrize("settings", [{"batch_size": 46}, {"batch_size": 0}, {"market_data_type": 5}, {"strikes": 0}])
def test_settings_outside_ibkr_limits_are_refused(settings: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        IBKROptionChains(**settings)
