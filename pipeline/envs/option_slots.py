"""Collected option chains onto the session's snapshot slots, so days with gaps load as tensors of one length.

A live collector stamps each snapshot with its fetch time (a few seconds after its slot) and a missed snapshot leaves
a slot empty, so collected days differ in their snapshot times and counts. Here every snapshot is labelled with the
slot it was taken in (the latest slot time at or before its fetch time: a label never later than the data is old,
and every value at a label comes from one snapshot, so nothing is seen before it was fetched). An empty slot stays
empty: the chain builder carries the last quotes forward only to mark what is held, with nothing quoted to open.
Days start at the latest first slot any of them has, so a day whose first snapshots were missed shortens every day;
its early slots never take values from a later snapshot (tests/test_option_slots.py changes every later snapshot
and finds the earlier slots unchanged).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime

import polars as pl

from pipeline.contract.calendar import snapshot_times, trading_session

_SLOT = "_slot"


def _labelled(frame: pl.DataFrame, minutes: int) -> pl.DataFrame:
    """`frame` with `_slot`: the index of the slot each row's ts was taken in (null before the first slot or after
    the day's last)."""
    parts = []
    for day in frame["trading_day"].unique().sort().to_list():
        session = trading_session(day)
        n_slots = len(snapshot_times(session, minutes))
        elapsed = (pl.col("ts") - pl.lit(session.open).dt.cast_time_unit("us")).dt.total_seconds()
        index = (elapsed // (minutes * 60)).cast(pl.Int64) - 1
        parts.append(
            frame.filter(pl.col("trading_day") == day).with_columns(
                pl.when((index >= 0) & (index < n_slots)).then(index).alias(_SLOT)
            )
        )
    return pl.concat(parts) if parts else frame.with_columns(pl.lit(None, pl.Int64).alias(_SLOT))


def align_to_slots(
    chain: pl.DataFrame, features: pl.DataFrame | None, minutes: int
) -> tuple[pl.DataFrame, pl.DataFrame | None, dict[date, list[datetime]]]:
    """(chain, features, times per day) with every ts replaced by its slot time.

    Where one slot holds several snapshots the latest is kept; rows outside the slots are dropped. The times per day
    are the slots from the common first slot to the day's last, empty ones included. Raises ValueError when the days
    have different numbers of slots (an early close among regular days): load them separately.
    """
    labelled = _labelled(chain, minutes).filter(pl.col(_SLOT).is_not_null())
    if labelled.is_empty():
        raise ValueError(f"no option snapshot falls in a {minutes}-minute slot of its session; check the interval")
    latest = labelled.group_by("trading_day", _SLOT).agg(pl.col("ts").max())
    labelled = labelled.join(latest, on=["trading_day", _SLOT, "ts"], how="semi")
    grids = {day: snapshot_times(trading_session(day), minutes) for day in latest["trading_day"].unique().to_list()}
    lengths = {day: len(grid) for day, grid in grids.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"days have different numbers of {minutes}-minute slots {sorted(lengths.items())} (an early "
                         "close?); load the days of each session length separately")
    start = int(latest.group_by("trading_day").agg(pl.col(_SLOT).min())[_SLOT].max())
    times = {day: grid[start:] for day, grid in grids.items()}
    slot_time = pl.DataFrame(
        [(day, i, t) for day, grid in grids.items() for i, t in enumerate(grid) if i >= start],
        schema={"trading_day": pl.Date, _SLOT: pl.Int64, "slot_ts": chain.schema["ts"]}, orient="row",
    )
    mapping = labelled.select("trading_day", "ts", _SLOT).unique().join(slot_time, on=["trading_day", _SLOT])
    return _relabel(labelled, mapping), _relabel(features, mapping) if features is not None else None, times


def _relabel(frame: pl.DataFrame, mapping: pl.DataFrame) -> pl.DataFrame:
    """Rows whose (trading_day, ts) is a kept snapshot, with ts replaced by its slot time."""
    columns: Sequence[str] = [c for c in frame.columns if c != _SLOT]
    joined = frame.select(columns).join(mapping.select("trading_day", "ts", "slot_ts"), on=["trading_day", "ts"])
    return joined.with_columns(pl.col("slot_ts").alias("ts")).select(columns)
