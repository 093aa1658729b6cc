"""Inter-process serialization of DuckDB access to one warehouse file.

DuckDB lets only one process hold a read-write connection on a file; a second one fails with
"Could not set lock on file". Every access therefore takes an exclusive `fcntl.flock` on `<warehouse>.lock`
first (blocking, with a timeout), and the DuckDB open itself is retried with backoff in case a process that
does not use this lock (a DuckDB CLI, a notebook) holds the file.
"""

from __future__ import annotations

import fcntl
import os
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

_POLL_S = 0.02
_OPEN_RETRIES = 8


class WarehouseLockTimeout(TimeoutError):
    """Another process kept the warehouse busy for longer than the lock timeout."""


# Lock files this thread holds: a nested acquisition would wait on itself until the timeout.
_held = threading.local()


@contextmanager
def file_lock(lock_path: Path, timeout_s: float) -> Iterator[None]:
    """Hold an exclusive flock on `lock_path`; released on exit and by the kernel if the process dies."""
    held: set[str] = _held.__dict__.setdefault("paths", set())
    key = str(lock_path.resolve())
    if key in held:
        raise RuntimeError(
            f"nested access to the warehouse {lock_path.name.removesuffix('.lock')} while this thread already "
            "holds it (e.g. calling a Warehouse method inside `with warehouse.connect()`): use the connection "
            "you already have"
        )
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    held.add(key)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise WarehouseLockTimeout(
                        f"waited {timeout_s:.0f}s for the warehouse lock {lock_path}: another process is still "
                        "reading or writing it. Wait for that run to finish, or pass a larger lock_timeout_s "
                        "to Warehouse(...)."
                    ) from None
                # Jitter so that waiting processes do not retry in lockstep.
                time.sleep(_POLL_S * (1.0 + random.random()))
        yield
    finally:
        held.discard(key)
        os.close(fd)


def _is_file_lock_error(exc: duckdb.Error) -> bool:
    return "lock" in str(exc).lower()


def open_with_retry(path: Path, timeout_s: float) -> duckdb.DuckDBPyConnection:
    """Open a read-write DuckDB connection, retrying while a process outside our flock holds the file."""
    delay = 0.05
    deadline = time.monotonic() + timeout_s
    for attempt in range(_OPEN_RETRIES + 1):
        try:
            return duckdb.connect(str(path))
        except duckdb.IOException as exc:
            if not _is_file_lock_error(exc):
                raise
            if attempt == _OPEN_RETRIES or time.monotonic() >= deadline:
                raise WarehouseLockTimeout(
                    f"could not open the warehouse {path}: {exc}. A process that does not go through "
                    "pipeline.lake (a DuckDB CLI or notebook session?) holds the file; close it and retry."
                ) from exc
            time.sleep(delay * (1.0 + random.random()))
            delay = min(delay * 2, 2.0)
    raise AssertionError("unreachable")  # pragma: no cover
