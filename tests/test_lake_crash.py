"""A writer SIGKILLed mid-write leaves each partition with its old or its new content, never partial or empty."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from datetime import date
from functools import cache
from pathlib import Path

import polars as pl
import pytest

from pipeline.lake import Warehouse, WarehouseLockTimeout

DAY = date(2024, 7, 5)
# More than one DuckDB row group (122,880 rows), so the insert writes blocks to the file before it commits.
ROWS = 150_000
REPO = Path(__file__).resolve().parents[1]

Fingerprint = tuple[int, float, str, int]

# Builds the two contents of the partition and reads its fingerprint; run by the child and by this test.
SHARED = """
from datetime import UTC, date, datetime, timedelta
import polars as pl
from pipeline.contract.schemas import RAW_COLUMNS

def content(version: int, rows: int, day: date) -> tuple[pl.DataFrame, pl.DataFrame]:
    n = rows + 1000 * version
    start = datetime(day.year, day.month, day.day, 13, 30, tzinfo=UTC)
    trades = pl.DataFrame(
        {
            "symbol": pl.Series(["SPY", "QQQ"] * (n // 2) + ["SPY"] * (n % 2)),
            "ts": pl.datetime_range(start, start + timedelta(microseconds=n - 1), "1us", eager=True),
            "price": pl.int_range(n, eager=True).cast(pl.Float64) * 0.01 + 100.0 * (version + 1),
            "size": pl.Series([100.0] * n),
            "exchange": pl.Series(["P"] * n),
            "conditions": pl.Series([None] * n, dtype=pl.Utf8),
            "source": pl.Series([f"v{version}"] * n),
            "trading_day": pl.Series([day] * n),
        }
    ).cast(RAW_COLUMNS["trades"])
    rejected = pl.DataFrame(
        {
            "source_table": ["trades"] * (version + 1),
            "trading_day": [day] * (version + 1),
            "reason": [f"v{version}"] * (version + 1),
            "payload": ["{}"] * (version + 1),
            "ingested_at": [datetime(2024, 7, 5, tzinfo=UTC)] * (version + 1),
        }
    )
    return trades, rejected

def fingerprint(con, day: date) -> tuple[int, float, str, int]:
    '''(row count, price checksum, source tag, quarantined rows) of the day's partition.'''
    n, checksum, source, rejected = con.execute(
        "SELECT (SELECT count(*) FROM raw.trades WHERE trading_day = $day), "
        "(SELECT coalesce(sum(price), 0) FROM raw.trades WHERE trading_day = $day), "
        "(SELECT coalesce(min(source), '') FROM raw.trades WHERE trading_day = $day), "
        "(SELECT count(*) FROM quarantine.rejected_rows WHERE trading_day = $day)",
        {"day": day},
    ).fetchall()[0]
    return int(n), round(float(checksum), 2), str(source), int(rejected)
"""

# Writes version 1 over version 0, and stops for good right after the first statement that starts with
# `stop_after`: the transaction is open (or, for COMMIT, committed on a connection that was never closed) when
# the parent, told by the "paused" line, kills it. The line carries what the writer's own connection saw then.
CHILD = SHARED + """
import json, sys, time
from contextlib import contextmanager
from pipeline.lake import Warehouse

path, rows, stop_after = sys.argv[1], int(sys.argv[2]), sys.argv[3]
day = date(2024, 7, 5)
trades, rejected = content(1, rows, day)
warehouse = Warehouse(path)


class StoppingConnection:
    def __init__(self, con):
        self._con = con

    def __getattr__(self, name):
        return getattr(self._con, name)

    def execute(self, sql, *args):
        result = self._con.execute(sql, *args)
        if sql.startswith(stop_after):
            print("paused", json.dumps(fingerprint(self._con, day)), flush=True)
            time.sleep(600)
        return result


real_connect = Warehouse.connect


@contextmanager
def stopping_connect(self):
    with real_connect(self) as con:
        # No checkpoint at COMMIT: a kill after it leaves the commit in the WAL for the next open to replay.
        con.execute("SET checkpoint_threshold = '1GB'")
        yield StoppingConnection(con)


Warehouse.connect = stopping_connect
warehouse.write_partition("raw.trades", [day], trades, rejected)
print("finished", flush=True)
"""


@cache
def _shared() -> dict:
    namespace: dict = {}
    exec(SHARED, namespace)  # the same code the child runs, so expectations match byte for byte
    return namespace


def _content(version: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    return _shared()["content"](version, ROWS, DAY)


def _fingerprint(warehouse: Warehouse) -> Fingerprint:
    with warehouse.connect() as con:
        return _shared()["fingerprint"](con, DAY)


def _expected(version: int) -> Fingerprint:
    trades, rejected = _content(version)
    return trades.height, round(float(trades["price"].sum()), 2), f"v{version}", rejected.height


OLD, NEW = 0, 1
# Statement the writer dies right after -> what its own open transaction holds then, from the old (o) and
# new (n) fingerprints. All but the last are partial states no other reader may ever see.
STAGES = {
    "BEGIN TRANSACTION": lambda o, n: o,
    "DELETE FROM raw.trades": lambda o, n: (0, 0.0, "", o[3]),
    "INSERT INTO raw.trades": lambda o, n: (*n[:3], o[3]),
    "DELETE FROM quarantine.rejected_rows": lambda o, n: (*n[:3], 0),
    "COMMIT": lambda o, n: n,
}


@pytest.mark.parametrize("stop_after", list(STAGES))
def test_sigkill_mid_write_leaves_old_or_new_partition(tmp_path: Path, stop_after: str) -> None:
    db = tmp_path / "warehouse.duckdb"
    Warehouse(db).write_partition("raw.trades", [DAY], *_content(OLD))
    old, new = _expected(OLD), _expected(NEW)

    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(db), str(ROWS), stop_after],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline().decode().split(maxsplit=1)
        if line[:1] != ["paused"]:
            child.kill()
            stderr = child.communicate(timeout=60)[1].decode()
            raise AssertionError(f"the writer never stopped after {stop_after!r}: {line} {stderr}")
        # The kill lands inside the write: its transaction holds the partial state, and it holds the warehouse.
        assert tuple(json.loads(line[1])) == STAGES[stop_after](old, new)
        with pytest.raises(WarehouseLockTimeout):
            Warehouse(db, lock_timeout_s=0.2)
    finally:
        child.kill()
        _, stderr = child.communicate(timeout=60)
    assert child.returncode == -signal.SIGKILL, stderr.decode()

    committed = stop_after == "COMMIT"
    if committed:
        # The commit sits only in the WAL: the open below has to replay it.
        assert db.with_name(db.name + ".wal").exists()
    # The kernel dropped the dead writer's flock: the next process gets the warehouse without waiting it out.
    after_kill = Warehouse(db, lock_timeout_s=10)
    assert _fingerprint(after_kill) == (new if committed else old)

    # The next writer replaces the partition as usual, and nothing of the killed write is left around it.
    version = OLD if committed else NEW
    after_kill.write_partition("raw.trades", [DAY], *_content(version))
    assert _fingerprint(Warehouse(db)) == _expected(version)
    assert after_kill.row_count("raw.trades") == _expected(version)[0]
    assert after_kill.row_count("quarantine.rejected_rows") == _expected(version)[3]
