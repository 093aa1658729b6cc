"""Several processes share one DuckDB file through the warehouse lock: no "Could not set lock on file"."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from datetime import date, timedelta
from pathlib import Path

import pytest

from pipeline.lake import Warehouse, WarehouseLockTimeout
from pipeline.lake_lock import file_lock

REPO = Path(__file__).resolve().parents[1]
FIRST_DAY = date(2024, 7, 1)
WRITERS = 4
READERS = 2
ROWS = 20_000
WRITES_EACH = 3

WRITER = """
import sys, time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
import polars as pl
from pipeline.lake import Warehouse
from pipeline.market.schemas import RAW_COLUMNS

path, day, rows, writes, go = sys.argv[1], date.fromisoformat(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), Path(sys.argv[5])
start = datetime(day.year, day.month, day.day, 13, 30, tzinfo=UTC)
frame = pl.DataFrame({
    "symbol": ["SPY"] * rows,
    "ts": pl.datetime_range(start, start + timedelta(microseconds=rows - 1), "1us", eager=True),
    "price": [100.0] * rows, "size": [1.0] * rows, "exchange": ["P"] * rows, "conditions": [None] * rows,
    "source": ["writer"] * rows, "trading_day": [day] * rows,
}).cast(RAW_COLUMNS["trades"])
warehouse = Warehouse(path)
while not go.exists():
    time.sleep(0.01)
for _ in range(writes):
    warehouse.write_partition("raw.trades", [day], frame)
"""

READER = """
import sys, time
from pathlib import Path
from pipeline.lake import Warehouse

path, go, writes = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
warehouse = Warehouse(path)
while not go.exists():
    time.sleep(0.01)
seen = [warehouse.row_count("raw.trades") for _ in range(writes)]
assert all(n % int(sys.argv[4]) == 0 for n in seen), seen  # whole partitions only
print(max(seen))
"""


def test_four_writers_and_readers_share_one_file(tmp_path: Path) -> None:
    db = tmp_path / "warehouse.duckdb"
    Warehouse(db)
    go = tmp_path / "go"
    days = [FIRST_DAY + timedelta(days=i) for i in range(WRITERS)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(db), day.isoformat(), str(ROWS), str(WRITES_EACH), str(go)],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        for day in days
    ]
    procs += [
        subprocess.Popen(
            [sys.executable, "-c", READER, str(db), str(go), str(WRITES_EACH * 2), str(ROWS)],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        for _ in range(READERS)
    ]
    # Let every process finish importing before releasing them together, so their writes really overlap.
    time.sleep(1.0)
    go.touch()
    outputs = [proc.communicate(timeout=120) for proc in procs]
    for proc, (_, stderr) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, stderr.decode()
        assert b"Could not set lock" not in stderr

    warehouse = Warehouse(db)
    for day in days:
        assert warehouse.row_count("raw.trades", [day]) == ROWS
    assert warehouse.row_count("raw.trades") == WRITERS * ROWS


def test_lock_timeout_names_the_lock_and_the_fix(tmp_path: Path) -> None:
    warehouse = Warehouse(tmp_path / "warehouse.duckdb", lock_timeout_s=0.3)
    # Another thread holds the lock, as another process would (flock conflicts between open file descriptions).
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with file_lock(warehouse.lock_path, timeout_s=1.0):
            held.set()
            release.wait(timeout=30)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(timeout=10)
        started = time.monotonic()
        with pytest.raises(WarehouseLockTimeout, match=r"warehouse\.duckdb\.lock.*lock_timeout_s"):
            warehouse.row_count("raw.trades")
        assert time.monotonic() - started < 5.0
    finally:
        release.set()
        holder.join()
    assert warehouse.row_count("raw.trades") == 0


HOLDER = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1])
print("holding", flush=True)
time.sleep(float(sys.argv[2]))
con.close()
"""


def test_open_retries_while_a_foreign_process_holds_the_file(tmp_path: Path) -> None:
    db = tmp_path / "warehouse.duckdb"
    warehouse = Warehouse(db)
    # A DuckDB session that ignores our lock (a CLI, a notebook) holds the file for a moment.
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(db), "1.0"], stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"holding"
        started = time.monotonic()
        assert warehouse.row_count("raw.trades") == 0
        # It could only open the file once the holder let go of it.
        assert time.monotonic() - started > 0.5
    finally:
        holder.wait(timeout=30)
    assert holder.returncode == 0


def test_nested_access_fails_at_once_instead_of_waiting_on_itself(tmp_path: Path) -> None:
    warehouse = Warehouse(tmp_path / "warehouse.duckdb", lock_timeout_s=60)
    started = time.monotonic()
    with warehouse.connect() as con, pytest.raises(RuntimeError, match="use the connection you already have"):
        warehouse.row_count("raw.trades")
    assert time.monotonic() - started < 5.0
    assert con is not None and warehouse.row_count("raw.trades") == 0
