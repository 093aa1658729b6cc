"""No look-ahead at the seam between the data and the envs: fill forward only, an unfilled value is 0 with a missing
flag, a symbol cannot trade before its first quote, a late option contract is not back-filled, and NaN in the
warehouse is flagged, never a silent 0."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from pipeline.contract.calendar import trading_session
from pipeline.envs.intraday import LONG, IntradayConfig, IntradayTradingEnv
from pipeline.envs.options_chain import chain_tensors_from_snapshots
from pipeline.envs.tensors import UNQUOTED_PRICE, MarketTensors
from pipeline.envs.warehouse_loader import MarketLoaderConfig, load_market_tensors
from pipeline.lake import Warehouse
from pipeline.synthetic.source import SyntheticMarket, SyntheticMarketConfig

OPEN = datetime(2024, 7, 1, 13, 31)  # the first bar end of 2024-07-01 (09:31 New York), naive UTC
NAN = float("nan")


def frames(a_bid: list[float | None], b_bid: list[float | None], feature: list[float | None]) -> tuple:
    """(bars, features) of symbols A and B over len(a_bid) minutes; ask = bid + 0.1; B's feature is 1.0."""
    ts = [OPEN + timedelta(minutes=i) for i in range(len(a_bid))]
    bars = pl.DataFrame({
        "symbol": ["A"] * len(ts) + ["B"] * len(ts), "ts": ts * 2, "bid": a_bid + b_bid,
    }).with_columns(ask=pl.col("bid") + 0.1)
    features = pl.DataFrame({
        "symbol": ["A"] * len(ts) + ["B"] * len(ts), "ts": ts * 2, "momentum": feature + [1.0] * len(ts),
    })
    return bars, features


def test_leading_nulls_stay_zero_with_a_flag_and_later_gaps_fill_forward() -> None:
    bars, features = frames([10.0] * 5, [20.0] * 5, [None, None, 7.0, None, 9.0])
    market = MarketTensors.from_frames(bars, features)
    assert market.feature_names == ("momentum", "momentum_missing")
    assert market.features[0, :, 0, 0].tolist() == [0.0, 0.0, 7.0, 7.0, 9.0]  # never [7, 7, 7, 7, 9]
    assert market.features[0, :, 0, 1].tolist() == [1.0, 1.0, 0.0, 0.0, 0.0]
    assert market.features[0, :, 1].tolist() == [[1.0, 0.0]] * 5


def test_a_symbol_cannot_trade_before_its_first_quote() -> None:
    bars, features = frames([10.0] * 4, [None, None, 20.0, 21.0], [1.0] * 4)
    market = MarketTensors.from_frames(bars, features)
    assert market.tradable[0, :, 1].tolist() == [False, False, True, True]
    assert market.quoted[0, :, 1].tolist() == [False, False, True, True]
    # Before the first quote the price is a stand-in, not the later quote of 20.
    assert market.bid[0, :2, 1].tolist() == [UNQUOTED_PRICE] * 2 == market.ask[0, :2, 1].tolist()
    assert market.tradable[0, :, 0].all()
    # A symbol with no row at all before minute 2 is the same case.
    bars = bars.filter((pl.col("symbol") == "A") | (pl.col("ts") >= OPEN + timedelta(minutes=2)))
    assert MarketTensors.from_frames(bars, features).tradable[0, :, 1].tolist() == [False, False, True, True]


def test_quotes_need_only_be_valid_where_tradable() -> None:
    bid = np.array([[[NAN], [10.0], [10.1]]])
    tradable = np.array([[[False], [True], [True]]])
    market = MarketTensors.from_arrays(bid, bid + 0.02, tradable=tradable)
    assert market.bid[0, :, 0].tolist() == pytest.approx([UNQUOTED_PRICE, 10.0, 10.1])
    with pytest.raises(ValueError, match="forward-fill missing quotes"):
        MarketTensors.from_arrays(bid, bid + 0.02)


def test_a_price_imputed_from_a_close_is_tradable_on_its_own_bar_only() -> None:
    """Bar-only symbols trade at their close +- a half-spread. B has bars at minutes 0, 2, 4 only: at 1 and 3 its
    price would be the close the agent has just seen, so an order there must not fill."""
    ts = [OPEN + timedelta(minutes=i) for i in range(5)]
    bars = pl.DataFrame({"symbol": ["A"] * 5 + ["B"] * 3, "ts": ts + ts[::2],
                         "close": [10.0, 10.1, 10.2, 10.3, 10.4, 50.0, 60.0, 61.0]})
    market = MarketTensors.from_frames(bars)
    assert market.tradable[0, :, 0].all() and not market.quoted.any()
    assert market.tradable[0, :, 1].tolist() == [True, False, True, False, True]
    assert market.mid[0, :, 1].tolist() == pytest.approx([50.0, UNQUOTED_PRICE, 60.0, UNQUOTED_PRICE, 61.0])
    env = IntradayTradingEnv(market.subset(symbols=[1]), config=IntradayConfig(window=2, evaluation=True))
    env.reset(seed=0)
    _, _, _, _, info = env.step(torch.tensor([LONG]))  # decided at minute 0, minute 1 has no bar of its own
    assert float(info["position"][0]) == 0.0 and int(info["fills"][0]) == 0
    _, _, _, _, info = env.step(torch.tensor([LONG]))  # decided at minute 1, fills at minute 2's own price
    assert float(info["position"][0]) == 100.0 and float(info["entry_price"][0]) > 60.0


def atm_contract(right: str) -> tuple[pl.DataFrame, list, float, pl.Expr]:
    """One synthetic day's snapshots, their times, and the front-expiry contract nearest the first spot."""
    frame = SyntheticMarket(SyntheticMarketConfig(seed=3)).fetch(
        "option_snapshots", trading_session(date(2024, 7, 2)), ["SYMA"])
    times = sorted(frame["ts"].unique().to_list())
    first = frame.filter(pl.col("ts") == times[0])
    expiry = sorted(first["expiry"].unique().to_list())[0]
    spot = first["underlying_price"][0]
    strike = min(first.filter(pl.col("expiry") == expiry)["strike"].unique().to_list(), key=lambda k: abs(k - spot))
    return frame, times, strike, (pl.col("expiry") == expiry) & (pl.col("strike") == strike) & (pl.col("right") == right)


def test_a_late_option_contract_is_not_back_filled() -> None:
    frame, times, strike, contract = atm_contract("P")
    late = contract
    # The put is missing from the first snapshot and has no quote at the second.
    frame = frame.filter(~(late & (pl.col("ts") == times[0]))).with_columns(
        [pl.when(late & (pl.col("ts") == times[1])).then(None).otherwise(pl.col(c)).alias(c) for c in ("bid", "ask")]
    )
    chain = chain_tensors_from_snapshots(frame, expiries=1, strikes=3)
    k = chain.strike[0, 0].tolist().index(strike)
    put = (0, slice(None), 0, k, 1)
    assert chain.quoted[put].tolist()[:3] == [False, False, True]
    assert chain.bid[put].tolist()[:2] == [0.0, 0.0] and chain.ask[put].tolist()[:2] == [0.0, 0.0]
    quote = frame.filter(late & (pl.col("ts") == times[2]))
    assert float(chain.bid[put][2]) == pytest.approx(quote["bid"][0], rel=1e-6)
    assert chain.quoted[0, :, 0, k, 0].all()  # the call of that strike was quoted all along


def test_a_stale_option_quote_marks_what_is_held_but_opens_nothing() -> None:
    frame, times, strike, contract = atm_contract("C")
    gone = contract
    # The call is quoted at the first snapshot only: later snapshots carry that quote, which the agent has seen.
    frame = frame.filter(~(gone & (pl.col("ts") > times[0])))
    chain = chain_tensors_from_snapshots(frame, expiries=1, strikes=3)
    k = chain.strike[0, 0].tolist().index(strike)
    call = (0, slice(None), 0, k, 0)
    assert chain.quoted[call].tolist()[:3] == [True, False, False]
    first_ask = float(frame.filter(gone)["ask"][0])
    assert chain.ask[call].tolist()[:3] == pytest.approx([first_ask] * 3, rel=1e-6)


def test_nan_in_the_warehouse_is_flagged_not_zeroed(tmp_path: Path) -> None:
    store = Warehouse(tmp_path / "warehouse.duckdb")
    day = date(2024, 7, 1)
    ts = [OPEN + timedelta(minutes=i) for i in range(4)]
    keys = {"symbol": ["A"] * 4, "ts": ts, "trading_day": [day] * 4}
    utc = pl.col("ts").dt.replace_time_zone("UTC").dt.cast_time_unit("us")
    market = pl.DataFrame({**keys, "bar_interval": ["1m"] * 4, "log_return_1m": [NAN, 0.5, float("inf"), 0.25],
                           "turbulence_index": [None, NAN, 3.0, None]}).with_columns(utc)
    quotes = pl.DataFrame({**keys, "bid": [10.0, NAN, 10.2, 10.3], "ask": [10.1, 10.2, 10.3, 10.4]}).with_columns(utc)
    store.write_partition("features.market", [day], market)
    store.write_partition("features.bars_1m", [day], quotes)
    loaded = load_market_tensors(store, [day], config=MarketLoaderConfig(features=("log_return_1m",)))
    assert loaded.features[0, :, 0].tolist() == [[0.0, 1.0], [0.5, 0.0], [0.5, 0.0], [0.25, 0.0]]
    assert loaded.turbulence[0].tolist() == [0.0, 0.0, 3.0, 3.0]
    # A NaN bid is no quote: the last real one stays in force.
    assert loaded.bid[0, :, 0].tolist() == pytest.approx([10.0, 10.0, 10.2, 10.3])
    assert loaded.ask[0, :, 0].tolist() == pytest.approx([10.1, 10.1, 10.3, 10.4])
