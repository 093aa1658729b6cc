"""A whole collector day for one underlying against each broker's fake: how many snapshots and contracts it lands,
and that all of it ingests and loads as one day of env tensors."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from pipeline.contract.calendar import trading_session
from pipeline.contract.validation import validate
from pipeline.envs.option_slots import align_to_slots
from pipeline.envs.options_chain import chain_tensors_from_snapshots
from pipeline.sources.alpaca_source import AlpacaSource
from pipeline.sources.file_source import FileSource
from pipeline.sources.ibkr_options import IBKROptionChains, chain_pacer
from pipeline.sources.option_collector import ChainSource, collect_snapshot, collection_slots, missing_slots
from pipeline.sources.retry import RetryPolicy
from tests.fakes.alpaca_server import FakeAlpacaState, fake_alpaca, live_chain
from tests.fakes.ib import FakeClock
from tests.fakes.ib_options import FakeChainIB, weekly_chain

DAY = date(2024, 7, 5)
MINUTES = 15
SLOTS = collection_slots(DAY, MINUTES)


def _collect_day(source: ChainSource, now: list[datetime], tmp_path: Path) -> pl.DataFrame:
    """Every slot of DAY, each fetched 2 s after it; returns the day's landed rows, as the ingest reads them."""
    landing = tmp_path / "landing"
    for slot in SLOTS:
        now.append(slot + timedelta(seconds=2))
        (outcome,) = collect_snapshot(source, ["SPY"], slot, MINUTES, landing, tmp_path)
        assert not outcome.is_gap, outcome.gap_reason
    assert missing_slots(landing, "SPY", DAY, MINUTES) == []
    return FileSource(landing).fetch("option_snapshots", trading_session(DAY), ["SPY"])


def _check_day(rows: pl.DataFrame, contracts: int) -> None:
    assert len(SLOTS) == 25
    assert rows["ts"].n_unique() == 25 and rows.height == 25 * contracts
    result = validate("option_snapshots", rows, trading_session(DAY))
    assert result.rows_rejected == 0 and result.rows_accepted == rows.height
    chain, _, times = align_to_slots(result.accepted, None, MINUTES)
    tensors = chain_tensors_from_snapshots(chain, expiries=3, strikes=9, times=times)
    # 26 steps: the 25 collected slots and the close, which the collector never takes (nothing quoted there).
    assert tensors.bid.shape[:2] == (1, 26)
    assert bool(tensors.quoted[0, :25].all()) and not tensors.quoted[0, 25].any()


def test_an_ibkr_collector_day(tmp_path: Path) -> None:
    ib = FakeChainIB(spots={"SPY": 550.3}, chains={"SPY": weekly_chain("SPY", 756733, DAY, 550.3)}, today=DAY)
    clock = FakeClock()
    ib.clock = clock
    pacer = chain_pacer()
    pacer.clock, pacer.sleep = clock, clock.sleep
    now: list[datetime] = []
    source = IBKROptionChains(ib_factory=lambda: ib, clock=lambda: now[-1], pacer=pacer)
    rows = _collect_day(source, now, tmp_path)
    assert rows.filter(pl.col("ts") == rows["ts"].min()).height == 66  # 3 expiries x 11 strikes x call and put
    _check_day(rows, 66)


def test_an_alpaca_collector_day(tmp_path: Path) -> None:
    state = FakeAlpacaState(api_key="PKTEST", secret_key="s3cr3t", page_size=1000)
    state.chains = {"SPY": live_chain("SPY", 550.0)}
    state.latest_trades = {"SPY": {"t": "2024-07-05T13:59:59Z", "x": "V", "p": 550.0, "s": 10, "c": ["@"], "i": 1,
                                   "z": "C"}}
    now: list[datetime] = []
    with fake_alpaca(state) as url:
        source = AlpacaSource("PKTEST", "s3cr3t", url_override=url, clock=lambda: now[-1],
                              retry=RetryPolicy(max_attempts=1))
        rows = _collect_day(source, now, tmp_path)
    assert rows.filter(pl.col("ts") == rows["ts"].min()).height == 60  # 3 expiries x 10 strikes x call and put
    _check_day(rows, 60)


@pytest.mark.parametrize("day", [date(2024, 11, 29), date(2024, 12, 24)])
def test_an_early_close_day_has_fewer_slots(day: date) -> None:
    slots = collection_slots(day, MINUTES)
    assert len(slots) == 13 and slots[-1] < trading_session(day).close
