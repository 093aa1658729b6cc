"""Collected chains onto their slots: fetch-time stamps, missed slots and late starts load without look-ahead."""

from __future__ import annotations

from datetime import date, timedelta

import polars as pl
import pytest
import torch

from pipeline.contract.calendar import snapshot_times, trading_session
from pipeline.envs.option_slots import align_to_slots
from pipeline.envs.options_chain import OptionChainTensors, chain_tensors_from_snapshots
from pipeline.synthetic.config import SyntheticMarketConfig
from pipeline.synthetic.source import SyntheticMarket

DAYS = (date(2024, 7, 2), date(2024, 7, 3))  # 07-03 closes early: used only where that is the point
REGULAR = (date(2024, 7, 1), date(2024, 7, 2))
MINUTES = 15


@pytest.fixture(scope="module")
def on_time() -> pl.DataFrame:
    """Two regular days of synthetic chains, stamped exactly on the 15-minute grid (close included)."""
    market = SyntheticMarket(SyntheticMarketConfig(seed=3))
    return pl.concat([market.fetch("option_snapshots", trading_session(d), ["SYMA"]) for d in REGULAR])


def collected(frame: pl.DataFrame, seconds: int = 3) -> pl.DataFrame:
    """As the live collector would have them: fetched `seconds` after each slot, and no snapshot at the close."""
    closes = [trading_session(d).close for d in REGULAR]
    return frame.filter(~pl.col("ts").is_in(closes)).with_columns(pl.col("ts") + timedelta(seconds=seconds))


def tensors(frame: pl.DataFrame) -> OptionChainTensors:
    chain, _, times = align_to_slots(frame, None, MINUTES)
    return chain_tensors_from_snapshots(chain, expiries=2, strikes=5, times=times)


def test_fetch_time_stamps_land_on_their_slots(on_time: pl.DataFrame) -> None:
    exact = chain_tensors_from_snapshots(on_time, expiries=2, strikes=5)
    late = tensors(collected(on_time))
    assert late.bid.shape == exact.bid.shape  # 26 steps a day: the close slot is there, empty
    for name in ("bid", "ask", "iv", "underlying", "strike", "quoted"):
        assert torch.equal(getattr(late, name)[:, :-1], getattr(exact, name)[:, :-1]), name
    assert not late.quoted[:, -1].any()  # nothing was taken at the close, so nothing opens there
    assert torch.equal(late.underlying[:, -1], late.underlying[:, -2])  # carried from the slot before, not invented


def test_a_missed_slot_stays_empty_and_carries_only_the_past(on_time: pl.DataFrame) -> None:
    frame = collected(on_time)
    slots = snapshot_times(trading_session(REGULAR[1]), MINUTES)
    gap = slots[5]
    gappy = frame.filter(~((pl.col("trading_day") == REGULAR[1]) & (pl.col("ts") - timedelta(seconds=3) == gap)))
    chain = tensors(gappy)
    full = tensors(frame)
    assert not chain.quoted[1, 5].any() and full.quoted[1, 5].any()
    assert float(chain.underlying[1, 5]) == float(full.underlying[1, 4])  # the slot before the gap, never the next
    assert torch.equal(chain.bid[1, 5], full.bid[1, 4])  # quotes carried forward to mark what is held
    keep = [s for s in range(26) if s != 5]
    assert torch.equal(chain.bid[1, keep], full.bid[1, keep]) and torch.equal(chain.bid[0], full.bid[0])


def test_changing_later_snapshots_changes_nothing_before_them(on_time: pl.DataFrame) -> None:
    frame = collected(on_time)
    cut = snapshot_times(trading_session(REGULAR[0]), MINUTES)[9]
    later = pl.col("ts") > cut + timedelta(seconds=3)
    scrambled = frame.with_columns(
        [pl.when(later).then(pl.col(c) * 3.0).otherwise(pl.col(c)).alias(c) for c in ("bid", "ask", "iv",
                                                                                          "underlying_price")]
    )
    a, b = tensors(frame), tensors(scrambled)
    for name in ("bid", "ask", "iv", "underlying", "quoted", "strike"):
        assert torch.equal(getattr(a, name)[0, :10], getattr(b, name)[0, :10]), name
    assert not torch.equal(a.bid[0, 10:], b.bid[0, 10:])  # the scramble did reach the later slots


def test_a_late_start_shortens_every_day_instead_of_back_filling(on_time: pl.DataFrame) -> None:
    frame = collected(on_time)
    first_two = snapshot_times(trading_session(REGULAR[0]), MINUTES)[:2]
    late_start = frame.filter(~((pl.col("trading_day") == REGULAR[0])
                                & (pl.col("ts") - timedelta(seconds=3)).is_in(first_two)))
    chain, _, times = align_to_slots(late_start, None, MINUTES)
    assert [len(t) for t in times.values()] == [24, 24]
    assert times[REGULAR[1]][0] == snapshot_times(trading_session(REGULAR[1]), MINUTES)[2]
    assert chain["ts"].min() >= times[REGULAR[0]][0]


def test_of_two_snapshots_in_one_slot_the_later_is_kept(on_time: pl.DataFrame) -> None:
    frame = collected(on_time)
    slot = snapshot_times(trading_session(REGULAR[0]), MINUTES)[3]
    again = frame.filter(pl.col("ts") == slot + timedelta(seconds=3)).with_columns(
        pl.col("ts") + timedelta(minutes=1), pl.col("bid") + 0.01)
    chain, _, _ = align_to_slots(pl.concat([frame, again]), None, MINUTES)
    kept = chain.filter(pl.col("ts") == slot)
    assert kept.height == again.height and kept["bid"].sort().equals(again["bid"].sort())


def test_an_early_close_among_regular_days_is_refused() -> None:
    market = SyntheticMarket(SyntheticMarketConfig(seed=3))
    frame = pl.concat([market.fetch("option_snapshots", trading_session(d), ["SYMA"]) for d in DAYS])
    with pytest.raises(ValueError, match="different numbers of 15-minute slots"):
        align_to_slots(frame, None, MINUTES)
