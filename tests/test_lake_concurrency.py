"""Several processes share one DuckDB file through the warehouse lock: no "Could not set lock on file"."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pytest

from pipeline import lake_lock
from pipeline.lake import Warehouse, WarehouseLockTimeout
from pipeline.lake_lock import file_lock

REPO = Path(__file__).resolve().parents[1]
FIRST_DAY = date(2024, 7, 1)
WRITERS = 4
READERS = 2
ROWS = 20_000
WRITES_EACH = 3
READS_EACH = 10
# Generous: on a loaded machine importing polars and DuckDB in six processes at once can take a while.
READY_TIMEOUT_S = 120

# Each process prints "ready" once its imports are done and its Warehouse is open, then waits for `go`,
# so that the parent can release them all together and their accesses really overlap.
WRITER = """
import sys, time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
import polars as pl
from pipeline.lake import Warehouse
from pipeline.contract.schemas import RAW_COLUMNS

path, day, rows, writes, go = sys.argv[1], date.fromisoformat(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), Path(sys.argv[5])
start = datetime(day.year, day.month, day.day, 13, 30, tzinfo=UTC)
frame = pl.DataFrame({
    "symbol": ["SPY"] * rows,
    "ts": pl.datetime_range(start, start + timedelta(microseconds=rows - 1), "1us", eager=True),
    "price": [100.0] * rows, "size": [1.0] * rows, "exchange": ["P"] * rows, "conditions": [None] * rows,
    "source": ["writer"] * rows, "trading_day": [day] * rows,
}).cast(RAW_COLUMNS["trades"])
warehouse = Warehouse(path)
print("ready", flush=True)
while not go.exists():
    time.sleep(0.01)
for _ in range(writes):
    warehouse.write_partition("raw.trades", [day], frame)
"""

# One JSON line per read: the row count of every trading day present, all from one query (one snapshot).
READER = """
import json, sys, time
from pathlib import Path
from pipeline.lake import Warehouse

path, go, reads = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
warehouse = Warehouse(path)
print("ready", flush=True)
while not go.exists():
    time.sleep(0.01)
for _ in range(reads):
    counts = warehouse.query("SELECT trading_day, count(*) AS n FROM raw.trades GROUP BY trading_day")
    print(json.dumps({str(day): n for day, n in counts.iter_rows()}), flush=True)
"""


def _start(script: str, *args: object) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", script, *map(str, args)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def _wait_ready(procs: list[subprocess.Popen[bytes]]) -> None:
    """Block until every process has printed "ready" (a crashed one closes its stdout: fail with its stderr)."""
    done = threading.Event()

    def read_all() -> None:
        for proc in procs:
            assert proc.stdout is not None
            if proc.stdout.readline() != b"ready\n":
                break
        else:
            done.set()

    reader = threading.Thread(target=read_all, daemon=True)
    reader.start()
    reader.join(timeout=READY_TIMEOUT_S)
    if not done.is_set():
        for proc in procs:
            proc.kill()
        errors = [proc.communicate()[1].decode() for proc in procs]
        raise AssertionError(f"not every process got ready: {[e for e in errors if e]}")


def test_four_writers_and_readers_share_one_file(tmp_path: Path) -> None:
    db = tmp_path / "warehouse.duckdb"
    Warehouse(db)
    go = tmp_path / "go"
    days = [FIRST_DAY + timedelta(days=i) for i in range(WRITERS)]
    writers = [_start(WRITER, db, day.isoformat(), ROWS, WRITES_EACH, go) for day in days]
    readers = [_start(READER, db, go, READS_EACH) for _ in range(READERS)]
    _wait_ready(writers + readers)
    go.touch()
    outputs = [proc.communicate(timeout=120) for proc in writers + readers]
    for proc, (_, stderr) in zip(writers + readers, outputs, strict=True):
        assert proc.returncode == 0, stderr.decode()
        assert b"Could not set lock" not in stderr

    # write_partition replaces a day's rows in one transaction: a reader sees no day (0 rows) before its first
    # commit and exactly ROWS after it, never a torn write (a count in between) or a duplicate (2 * ROWS).
    for reader_number, (stdout, _) in enumerate(outputs[WRITERS:]):
        reads = [json.loads(line) for line in stdout.decode().splitlines()]
        assert len(reads) == READS_EACH, f"reader {reader_number} printed {stdout.decode()!r}"
        for read in reads:
            assert set(read) <= {str(day) for day in days}, read
            assert set(read.values()) <= {ROWS}, f"reader {reader_number} saw a partial partition: {read}"
        # A committed day never disappears again: the days a reader sees only grow from one read to the next.
        seen = [set(read) for read in reads]
        assert all(before <= after for before, after in zip(seen, seen[1:], strict=False)), seen

    warehouse = Warehouse(db)
    for day in days:
        assert warehouse.row_count("raw.trades", [day]) == ROWS
    assert warehouse.row_count("raw.trades") == WRITERS * ROWS


def test_lock_timeout_names_the_lock_and_the_fix(tmp_path: Path) -> None:
    warehouse = Warehouse(tmp_path / "warehouse.duckdb", lock_timeout_s=0.3)
    # Another thread holds the lock, as another process would (flock conflicts between open file descriptions).
    held, release = threading.Event(), threading.Event()
    holding: list[bool] = []

    def hold() -> None:
        with file_lock(warehouse.lock_path, timeout_s=1.0):
            holding.append(True)
            held.set()
            release.wait(timeout=30)
            holding.append(False)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(timeout=10)
        with pytest.raises(WarehouseLockTimeout, match=r"warehouse\.duckdb\.lock.*lock_timeout_s"):
            warehouse.row_count("raw.trades")
        # The timeout fired because of the holder, which had not let go yet when the error came.
        assert holding == [True]
    finally:
        release.set()
        holder.join()
    assert holding == [True, False]
    assert warehouse.row_count("raw.trades") == 0


# A DuckDB session that ignores our lock (a CLI, a notebook): holds the file until told to close it.
HOLDER = """
import sys, duckdb
con = duckdb.connect(sys.argv[1])
print("holding", flush=True)
sys.stdin.readline()
con.close()
"""


def test_open_retries_while_a_foreign_process_holds_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "warehouse.duckdb"
    warehouse = Warehouse(db)
    # Record every DuckDB open the warehouse tries: "locked" for a refusal, "opened" for a connection.
    attempts: list[str] = []
    refused = threading.Event()
    real_connect = duckdb.connect

    def recording_connect(*args: object, **kwargs: object) -> duckdb.DuckDBPyConnection:
        try:
            con = real_connect(*args, **kwargs)
        except duckdb.IOException:
            attempts.append("locked")
            refused.set()
            raise
        attempts.append("opened")
        return con

    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(db)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert holder.stdin is not None and holder.stdout is not None
    counts: list[int] = []
    try:
        assert holder.stdout.readline().strip() == b"holding"
        monkeypatch.setattr(lake_lock.duckdb, "connect", recording_connect)
        reader = threading.Thread(target=lambda: counts.append(warehouse.row_count("raw.trades")))
        reader.start()
        # Let the holder go only once the warehouse has been refused at least once.
        assert refused.wait(timeout=60), attempts
    finally:
        holder.stdin.write(b"close\n")
        holder.stdin.close()
        holder.wait(timeout=30)
    reader.join(timeout=60)
    assert holder.returncode == 0
    # Refused while the holder had the file, then opened it on a retry instead of failing.
    assert counts == [0]
    assert attempts[0] == "locked" and attempts[-1] == "opened", attempts
    assert attempts.count("opened") == 1, attempts


# A nested acquisition that waited on its own lock would hang for lock_timeout_s; the marker fails it long
# before that, and the RuntimeError (not WarehouseLockTimeout) shows it was caught up front.
@pytest.mark.timeout(30)
def test_nested_access_fails_at_once_instead_of_waiting_on_itself(tmp_path: Path) -> None:
    warehouse = Warehouse(tmp_path / "warehouse.duckdb", lock_timeout_s=60)
    with warehouse.connect() as con, pytest.raises(RuntimeError, match="use the connection you already have"):
        warehouse.row_count("raw.trades")
    assert con is not None and warehouse.row_count("raw.trades") == 0
