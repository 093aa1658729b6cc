"""What more than one benchmark script needs: kept here so the scripts stay one file each of their own figures."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """File descriptor 1 (this process's and its children's stdout) onto 2 for the block: a trainer process prints
    its RESULT line to the stdout it inherits, and a benchmark's stdout is for its JSON alone."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
