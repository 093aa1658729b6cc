"""The live option-chain collector: snapshots of the brokers' current chains, written as landed files.

Brokers serve an option chain as it is now (Alpaca's chain endpoint, IBKR market-data snapshots), so a history is
built by taking a snapshot every `minutes` during the session and keeping each one. A snapshot is written as one
Parquet file per underlying into the day folder `<landing>/option_snapshots/<YYYY-MM-DD>/`, its rows stamped with
the time it was fetched; the day's ingest (and the landing sensor) reads those files like any other landed file, so
validation, the quarantine and the one-transaction write stay in one place.

A snapshot that cannot be taken (the broker is down, the chain came back empty) is a gap: it is logged, one line in
`<lake>/logs/option_snapshot_gaps.log`, and nothing is written. It is never filled with a copy of another snapshot.
`missing_slots` finds the slots of a day no file covers, whatever the cause (a failed fetch, or no run at all).
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Protocol, runtime_checkable
from zoneinfo import ZoneInfo

import polars as pl

from pipeline.contract.calendar import NY_TZ, TradingSession, is_trading_day, snapshot_times, trading_session
from pipeline.contract.parsing import PARSE_ERROR
from pipeline.contract.schemas import RAW_COLUMNS
from pipeline.sources.base import MarketSource, SourceError
from pipeline.sources.file_source import FileSource
from pipeline.versioned_folder import clean_stale_files

logger = logging.getLogger(__name__)

TABLE = "option_snapshots"
GAPS_LOG = Path("logs") / "option_snapshot_gaps.log"
_STAMP = "%Y%m%dT%H%M%S%fZ"
TMP_SUFFIX = ".tmp"
STALE_TMP_S = 3600.0
"""A snapshot file takes seconds to write: a temporary one an hour old belongs to no running collection."""


@runtime_checkable
class ChainSource(Protocol):
    """A broker's live chain: `current_chain` returns raw.option_snapshots rows stamped with the fetch time."""

    name: str

    def current_chain(self, underlyings: Sequence[str]) -> pl.DataFrame: ...


def collection_slots(day: date | str, minutes: int) -> list[datetime]:
    """The times (UTC) the collector takes a snapshot on `day`: the snapshot grid without the close itself.

    A chain fetched at the closing bell arrives after it, and validation rejects rows stamped after the close, so
    the last slot is the one before the close. Early closes shorten the day. No slots on a day XNYS does not trade.
    """
    if not is_trading_day(day):
        return []
    session = trading_session(day)
    return [t for t in snapshot_times(session, minutes) if t < session.close]


def due_slot(now: datetime, minutes: int, lateness: timedelta | None = None) -> datetime | None:
    """The collection slot `now` is in time for: the latest slot at or before `now`, if at most `lateness` ago.

    `lateness` defaults to half the interval: a run started later than that (the daemon was down) is skipped, and
    its slot stays a gap, rather than taking a snapshot late and filing it as if on time.
    """
    now = now.astimezone(UTC)
    allowed = lateness if lateness is not None else timedelta(minutes=minutes / 2)
    day = now.astimezone(ZoneInfo(NY_TZ)).date()
    past = [t for t in collection_slots(day, minutes) if t <= now]
    if not past or now - past[-1] > allowed:
        return None
    return past[-1]


@dataclass(frozen=True)
class SnapshotOutcome:
    """What became of one underlying's snapshot for one slot: a file, or a gap with its reason."""

    underlying: str
    slot: datetime
    path: Path | None
    rows: int
    gap_reason: str | None = None

    @property
    def is_gap(self) -> bool:
        return self.path is None


def snapshot_path(landing_dir: Path, underlying: str, broker: str, fetched_at: datetime) -> Path:
    """`<landing>/option_snapshots/<New York date>/<UNDERLYING>_<broker>_<fetch time, UTC>.parquet`: in the day
    folder, so a day's ingest reads that day's snapshots only, however many days have been collected."""
    stamp = fetched_at.astimezone(UTC).strftime(_STAMP)
    day = fetched_at.astimezone(ZoneInfo(NY_TZ)).date().isoformat()
    return Path(landing_dir) / TABLE / day / f"{underlying}_{broker}_{stamp}.parquet"


def _write_atomically(frame: pl.DataFrame, path: Path) -> None:
    """Write to a hidden temporary file, then rename: the landing sensor never sees half a file. A failed write
    removes its temporary file; one a killed process left is removed by a later collection (`clean_stale_tmp`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    os.close(fd)
    try:
        frame.write_parquet(tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def clean_stale_tmp(landing_dir: Path) -> list[Path]:
    """Remove the temporary snapshot files of writers that died (older than STALE_TMP_S, so no running
    collection's own file); returns them."""
    return clean_stale_files(Path(landing_dir) / TABLE, f".*{TMP_SUFFIX}", STALE_TMP_S)


def _landed_columns(frame: pl.DataFrame) -> pl.DataFrame:
    """The columns a landed file carries: the contract's (the broker's name in `source` included), less the trading
    day, which the ingest sets."""
    return frame.select(c for c in RAW_COLUMNS[TABLE] if c != "trading_day")


def log_gap(lake_dir: Path, outcome: SnapshotOutcome, broker: str) -> Path:
    """Append one line for a missed snapshot to <lake>/logs/option_snapshot_gaps.log."""
    path = Path(lake_dir) / GAPS_LOG
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (f"{datetime.now(UTC).isoformat(timespec='seconds')} slot {outcome.slot.isoformat()} "
            f"{outcome.underlying} ({broker}): {outcome.gap_reason}\n")
    with path.open("a", encoding="utf-8") as log:
        log.write(line)
    return path


def collect_snapshot(
    source: ChainSource,
    underlyings: Sequence[str],
    slot: datetime,
    minutes: int,
    landing_dir: Path,
    lake_dir: Path,
) -> list[SnapshotOutcome]:
    """Take one slot's snapshot of each underlying's chain; one file per underlying, or a logged gap.

    Underlyings are fetched one at a time, so one that fails costs only its own snapshot. A chain stamped outside its
    slot (before it, or once the next slot had begun) is a gap too: filed under this slot it would stand for the
    wrong time.
    """
    for stale in clean_stale_tmp(landing_dir):
        logger.info("removed %s, the temporary file of a snapshot write that did not finish", stale)
    outcomes = []
    for underlying in underlyings:
        outcome = _collect_one(source, underlying, slot, timedelta(minutes=minutes), landing_dir)
        if outcome.is_gap:
            where = log_gap(lake_dir, outcome, source.name)
            logger.warning("option chain snapshot missed: %s at %s (%s); logged in %s",
                           underlying, slot.isoformat(), outcome.gap_reason, where)
        else:
            logger.info("option chain snapshot: %d contracts of %s written to %s", outcome.rows, underlying,
                        outcome.path)
        outcomes.append(outcome)
    return outcomes


def _collect_one(
    source: ChainSource, underlying: str, slot: datetime, span: timedelta, landing_dir: Path
) -> SnapshotOutcome:
    try:
        chain = source.current_chain([underlying])
    except SourceError as exc:
        return SnapshotOutcome(underlying, slot, None, 0, f"{type(exc).__name__}: {exc}")
    if chain.is_empty():
        return SnapshotOutcome(underlying, slot, None, 0, f"{source.name} returned no contracts for {underlying}")
    fetched = chain["ts"].max()
    if not slot <= fetched < slot + span:
        return SnapshotOutcome(
            underlying, slot, None, 0, f"chain stamped {fetched.isoformat()}, outside its slot (too late or early)"
        )
    path = snapshot_path(landing_dir, underlying, source.name, fetched)
    _write_atomically(_landed_columns(chain), path)
    return SnapshotOutcome(underlying, slot, path, chain.height)


def missing_slots(landing_dir: Path, underlying: str, day: date | str, minutes: int) -> list[datetime]:
    """The collection slots of `day` for which no landed snapshot file of `underlying` exists (the day's gaps)."""
    folder = Path(landing_dir) / TABLE / date.fromisoformat(str(day)).isoformat()
    taken: list[datetime] = []
    for path in folder.glob(f"{underlying}_*.parquet") if folder.is_dir() else []:
        stamp = path.stem.rsplit("_", 1)[-1]
        try:
            taken.append(datetime.strptime(stamp, _STAMP).replace(tzinfo=UTC))
        except ValueError:
            continue  # a file landed by hand, not by the collector
    span = timedelta(minutes=minutes)
    return [slot for slot in collection_slots(day, minutes) if not any(slot <= t < slot + span for t in taken)]


class CollectedChainsFirst:
    """A broker's MarketSource whose option chains come from the collector's landed files wherever a day has them.

    A collected snapshot is the broker's own chain as it was at that time; the broker's answer for a past day is at
    best a reconstruction (Alpaca: from bars, without quotes) or nothing (IBKR). So for each underlying with
    collected files on the day those rows are used, gaps and all, and the broker is asked only for the others.
    Every other table goes to the broker.
    """

    def __init__(self, broker: MarketSource, landed: FileSource) -> None:
        self.name = broker.name
        self._broker = broker
        self._landed = landed

    def __repr__(self) -> str:
        return f"CollectedChainsFirst({self._broker!r}, {self._landed!r})"

    def fetch(self, table: str, session: TradingSession, symbols: Sequence[str]) -> pl.DataFrame:
        if table != TABLE:
            return self._broker.fetch(table, session, symbols)
        collected = self._landed.fetch(table, session, symbols)
        have = set(collected["underlying"].drop_nulls().to_list())
        rest = [s for s in symbols if s not in have]
        if have:
            logger.info("option_snapshots of %s on %s: the collector's %d landed rows for %s", self.name,
                        session.trading_day, collected.height, sorted(have))
        if not rest:
            return collected
        asked = self._broker.fetch(table, session, rest).with_columns(pl.lit(None, pl.Utf8).alias(PARSE_ERROR))
        return pl.concat([collected, asked.select(collected.columns)]) if have else asked
