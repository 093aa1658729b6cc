"""A writer SIGKILLed mid-write leaves each partition with its old or its new content, never partial or empty."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import polars as pl

from pipeline.lake import Warehouse

DAY = date(2024, 7, 5)
ROWS = 150_000
KILLS = 5
REPO = Path(__file__).resolve().parents[1]

# Builds the two alternating contents of the partition; imported by the child and by this test.
CONTENT = """
from datetime import UTC, date, datetime, timedelta
import polars as pl
from pipeline.market.schemas import RAW_COLUMNS

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
"""

CHILD = CONTENT + """
import sys
from pipeline.lake import Warehouse

path, rows, progress = sys.argv[1], int(sys.argv[2]), open(sys.argv[3], "a", buffering=1)
day = date(2024, 7, 5)
frames = [content(v, rows, day) for v in (0, 1)]
warehouse = Warehouse(path)
progress.write("ready\\n")
version = 1
while True:
    progress.write(f"begin {version}\\n")
    warehouse.write_partition("raw.trades", [day], *frames[version])
    progress.write(f"done {version}\\n")
    version = 1 - version
"""


def _content(version: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    namespace: dict = {}
    exec(CONTENT, namespace)  # the same builder the child runs, so expectations match byte for byte
    return namespace["content"](version, ROWS, DAY)


def _fingerprint(warehouse: Warehouse) -> tuple[int, float, str, int]:
    """(row count, price checksum, source tag, quarantined rows) of the partition."""
    row = warehouse.query(
        "SELECT count(*) AS n, coalesce(sum(price), 0) AS checksum, coalesce(min(source), '') AS source "
        "FROM raw.trades WHERE trading_day = ?",
        [DAY],
    ).row(0)
    rejected = warehouse.row_count("quarantine.rejected_rows", [DAY])
    return int(row[0]), round(float(row[1]), 2), str(row[2]), rejected


def _expected(version: int) -> tuple[int, float, str, int]:
    trades, rejected = _content(version)
    return trades.height, round(float(trades["price"].sum()), 2), f"v{version}", rejected.height


def _wait_for(path: Path, text: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text():
            return
        time.sleep(0.02)
    raise AssertionError(f"the writer never reported {text!r}: {path.read_text() if path.exists() else ''}")


def test_sigkill_mid_write_leaves_old_or_new_partition(tmp_path: Path) -> None:
    db = tmp_path / "warehouse.duckdb"
    warehouse = Warehouse(db)
    warehouse.write_partition("raw.trades", [DAY], *_content(0))
    expected = {0: _expected(0), 1: _expected(1)}
    rng = random.Random(20240705)
    killed_mid_write = 0
    for attempt in range(KILLS):
        progress = tmp_path / f"progress_{attempt}.log"
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(db), str(ROWS), str(progress)], cwd=REPO, stderr=subprocess.PIPE
        )
        try:
            _wait_for(progress, "begin", timeout_s=60)
            time.sleep(rng.uniform(0.0, 1.5))
        finally:
            os.kill(child.pid, signal.SIGKILL)
            _, stderr = child.communicate()
        assert child.returncode == -signal.SIGKILL, stderr.decode()

        last = progress.read_text().split()[-2:]
        found = _fingerprint(Warehouse(db))
        assert found in expected.values(), f"partial partition after kill {attempt}: {found}"
        if last[0] == "begin":
            killed_mid_write += 1
            # Killed inside a write: the commit either happened or did not.
            writing = int(last[1])
            assert found in (expected[writing], expected[1 - writing])
        else:
            assert found == expected[int(last[1])]
    assert killed_mid_write >= 1, "no kill landed inside a write; the test proved nothing"
    assert Warehouse(db).row_count("raw.trades") in (expected[0][0], expected[1][0])
