"""The live option-chain collector: its XNYS slots, its files, its gaps, and how the ingest reads what it gathered."""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import polars as pl
import pytest

from pipeline.contract.calendar import trading_session
from pipeline.contract.schemas import conform
from pipeline.contract.validation import validate
from pipeline.sources.base import SourceUnavailableError
from pipeline.sources.file_source import FileSource
from pipeline.sources.option_collector import (
    GAPS_LOG,
    ChainSource,
    CollectedChainsFirst,
    collect_snapshot,
    collection_slots,
    due_slot,
    missing_slots,
)
from pipeline.sources.settings import SourceSettings, build_chain_source, build_market_source
from pipeline.synthetic.config import SyntheticMarketConfig
from pipeline.synthetic.source import SyntheticMarket

NY = ZoneInfo("America/New_York")
DAY = date(2024, 7, 5)
MINUTES = 15


def ny(day: date, hour: int, minute: int, second: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, second, tzinfo=NY).astimezone(UTC)


class ScriptedChains:
    """A broker's live chain as the collector sees it: four contracts stamped with the (scripted) fetch time.

    `delay` is how long after the slot the broker answers; an entry of `failures` makes that call fail instead.
    """

    name = "scripted"

    def __init__(self, now: Sequence[datetime], failures: Sequence[bool] = ()) -> None:
        self.now = list(now)
        self.failures = list(failures)
        self.calls: list[list[str]] = []

    def current_chain(self, underlyings: Sequence[str]) -> pl.DataFrame:
        self.calls.append(list(underlyings))
        ts = self.now.pop(0)
        if self.failures and self.failures.pop(0):
            raise SourceUnavailableError("could not reach the broker (test)")
        rows = [
            {"underlying": u, "underlying_price": 500.0, "contract": f"{u}240719{right}00{strike}000",
             "expiry": date(2024, 7, 19), "strike": float(strike), "right": right, "ts": ts,
             "bid": 4.9 + i, "ask": 5.1 + i, "last": 5.0 + i, "volume": 10.0, "open_interest": 100.0,
             "iv": 0.15, "delta": 0.5 if right == "C" else -0.5, "gamma": 0.02, "theta": -0.1, "vega": 0.3,
             "source": self.name, "trading_day": ts.astimezone(NY).date()}
            for u in underlyings
            for i, (strike, right) in enumerate([(495, "C"), (495, "P"), (505, "C"), (505, "P")])
        ]
        return conform("option_snapshots", pl.DataFrame(rows))


def test_slots_follow_the_xnys_session_and_stop_before_the_close() -> None:
    slots = collection_slots(DAY, MINUTES)
    assert slots[0] == ny(DAY, 9, 45) and slots[-1] == ny(DAY, 15, 45)
    assert len(slots) == 25  # 390 minutes: 26 grid points, the one at the close left out
    early = collection_slots(date(2024, 11, 29), MINUTES)  # the day after Thanksgiving closes at 13:00
    assert early[-1] == ny(date(2024, 11, 29), 12, 45) and len(early) == 13
    assert collection_slots(date(2024, 7, 4), MINUTES) == []  # Independence Day
    assert collection_slots(date(2024, 7, 6), MINUTES) == []  # a Saturday


def test_a_run_too_late_for_its_slot_takes_no_snapshot() -> None:
    assert due_slot(ny(DAY, 10, 0, 4), MINUTES) == ny(DAY, 10, 0)
    assert due_slot(ny(DAY, 10, 7), MINUTES) == ny(DAY, 10, 0)
    assert due_slot(ny(DAY, 10, 8), MINUTES) is None  # more than half an interval late: the slot stays a gap
    assert due_slot(ny(DAY, 9, 40), MINUTES) is None  # before the first slot
    assert due_slot(ny(date(2024, 11, 29), 13, 0, 2), MINUTES) is None  # after the early close


def test_each_underlying_becomes_one_file_stamped_with_its_fetch_time(tmp_path: Path) -> None:
    landing, slot = tmp_path / "landing", ny(DAY, 10, 0)
    fetched = [slot + timedelta(seconds=2), slot + timedelta(seconds=5)]
    outcomes = collect_snapshot(ScriptedChains(fetched), ["SPY", "QQQ"], slot, MINUTES, landing, tmp_path)
    assert [o.path.relative_to(landing).as_posix() for o in outcomes] == [
        "option_snapshots/2024-07-05/SPY_scripted_20240705T140002000000Z.parquet",
        "option_snapshots/2024-07-05/QQQ_scripted_20240705T140005000000Z.parquet"]
    assert [o.rows for o in outcomes] == [4, 4]
    assert not list((landing / "option_snapshots" / "2024-07-05").glob(".*"))  # no temporary file left behind
    # The landed file is read like any hand-landed file, and its rows pass validation.
    rows = FileSource(landing).fetch("option_snapshots", trading_session(DAY), [])
    assert sorted(set(rows["ts"].to_list())) == fetched
    result = validate("option_snapshots", rows, trading_session(DAY))
    assert result.rows_accepted == 8 and result.rows_rejected == 0
    assert result.accepted["reconstructed"].to_list() == [False] * 8
    assert set(result.accepted["source"]) == {"scripted"}  # the broker's name, not "files"


def test_a_missed_snapshot_is_logged_and_left_as_a_gap(tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    slots = collection_slots(DAY, MINUTES)[:3]
    broker = ScriptedChains([s + timedelta(seconds=1) for s in slots], failures=[False, True, False])
    outcomes = [collect_snapshot(broker, ["SPY"], s, MINUTES, landing, tmp_path)[0] for s in slots]
    assert [o.is_gap for o in outcomes] == [False, True, False]
    assert "could not reach the broker" in outcomes[1].gap_reason
    log = (tmp_path / GAPS_LOG).read_text().splitlines()
    assert len(log) == 1 and slots[1].isoformat() in log[0] and "SPY" in log[0]
    files = sorted((landing / "option_snapshots" / "2024-07-05").iterdir())
    assert len(files) == 2  # nothing was copied into the missed slot
    assert missing_slots(landing, "SPY", DAY, MINUTES)[:2] == [slots[1], collection_slots(DAY, MINUTES)[3]]
    # The ingested day has two snapshot times, not three: the gap stays a gap.
    rows = FileSource(landing).fetch("option_snapshots", trading_session(DAY), ["SPY"])
    assert rows["ts"].n_unique() == 2


def test_a_chain_stamped_outside_its_slot_is_a_gap_not_a_mislabelled_snapshot(tmp_path: Path) -> None:
    slot = ny(DAY, 10, 0)
    late = ScriptedChains([slot + timedelta(minutes=MINUTES, seconds=1)])
    [outcome] = collect_snapshot(late, ["SPY"], slot, MINUTES, tmp_path / "landing", tmp_path)
    assert outcome.is_gap and "outside its slot" in outcome.gap_reason
    assert not (tmp_path / "landing" / "option_snapshots").exists()


def test_collected_chains_win_over_the_broker_for_their_underlyings(tmp_path: Path) -> None:
    landing, slot = tmp_path / "landing", ny(DAY, 10, 0)
    collect_snapshot(ScriptedChains([slot + timedelta(seconds=1)]), ["SPY"], slot, MINUTES, landing, tmp_path)
    broker = SyntheticMarket(SyntheticMarketConfig(symbols=("SPY", "QQQ")))
    source = CollectedChainsFirst(broker, FileSource(landing))
    session = trading_session(DAY)
    rows = source.fetch("option_snapshots", session, ["SPY", "QQQ"])
    spy, qqq = (rows.filter(pl.col("underlying") == u) for u in ("SPY", "QQQ"))
    assert spy.height == 4 and spy["ts"].n_unique() == 1  # the collected snapshot only, not the broker's chains
    assert qqq.height == broker.fetch("option_snapshots", session, ["QQQ"]).height > 0
    result = validate("option_snapshots", rows, session)
    assert result.rows_rejected == 0 and result.rows_accepted == rows.height
    # Other tables go to the broker untouched.
    assert source.fetch("bars", session, ["SPY"]).equals(broker.fetch("bars", session, ["SPY"]))


@pytest.mark.parametrize("minutes", [7, 0, 45])
def test_an_interval_that_misses_cron_minutes_is_refused(minutes: int) -> None:
    with pytest.raises(ValueError, match="must divide 30"):
        SourceSettings(option_snapshot_minutes=minutes)


def test_a_broker_source_reads_collected_chains_and_the_collector_its_own_client_id(tmp_path: Path) -> None:
    settings = SourceSettings(source="ibkr", ibkr_client_id=30, ibkr_market_data_type=3)
    ingest = build_market_source(settings, tmp_path)
    assert isinstance(ingest, CollectedChainsFirst) and ingest.name == "ibkr"
    chains = build_chain_source(settings)
    assert isinstance(chains, ChainSource) and (chains.client_id, chains.market_data_type) == (31, 3)
    with pytest.raises(ValueError, match="collector reads a broker's live chain"):
        build_chain_source(SourceSettings(source="synthetic"))


def test_a_failed_write_leaves_no_temporary_file_and_a_crashs_is_removed_later(tmp_path: Path, monkeypatch) -> None:
    landing, slot = tmp_path / "landing", ny(DAY, 10, 0)
    folder = landing / "option_snapshots" / "2024-07-05"
    folder.mkdir(parents=True)
    # A collector killed mid-write an hour and more ago left its temporary file; a running one's is seconds old.
    crashed, running = folder / ".SPY_scripted_20240705T134500000000Z.parquet.tmp", folder / ".QQQ_x.parquet.tmp"
    for path in (crashed, running):
        path.write_bytes(b"half a parquet file")
    hours_ago = datetime.now(UTC).timestamp() - 2 * 3600
    os.utime(crashed, (hours_ago, hours_ago))

    def disk_full(self, file, *args, **kwargs):
        Path(file).write_bytes(b"half")
        raise OSError("No space left on device (test)")

    monkeypatch.setattr(pl.DataFrame, "write_parquet", disk_full)
    with pytest.raises(OSError, match="No space left"):
        collect_snapshot(ScriptedChains([slot + timedelta(seconds=1)]), ["SPY"], slot, MINUTES, landing, tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == [running.name]  # the crash's leftover and this write's: gone
