"""Bounded retries with exponential backoff and full jitter, for the network market sources.

The sleep and the random source are injectable so tests exercise every retry path without waiting.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")

logger = logging.getLogger(__name__)


@dataclass
class RetryPolicy:
    """How often and how long to retry a transient failure."""

    max_attempts: int = 5
    """Total attempts, the first one included; after the last one the error propagates."""
    base_delay_s: float = 1.0
    """Delay cap before the second attempt; it doubles with each further attempt."""
    max_delay_s: float = 30.0
    """Upper bound on any single delay."""
    sleep: Callable[[float], None] = time.sleep
    """Injected in tests so nothing really waits."""
    rng: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")

    def delay(self, attempt: int) -> float:
        """Full-jitter delay after failed attempt number `attempt` (1-based): uniform in [0, cap]."""
        cap = min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1))
        return self.rng.uniform(0.0, cap)

    def call(self, fn: Callable[[], T], is_transient: Callable[[BaseException], bool], what: str) -> T:
        """Run `fn`, retrying while it raises an error `is_transient` accepts; re-raise the last one.

        `what` names the operation in the debug log; it must not contain secrets.
        """
        for attempt in range(1, self.max_attempts + 1):
            try:
                return fn()
            except Exception as exc:
                if not is_transient(exc) or attempt == self.max_attempts:
                    raise
                wait = self.delay(attempt)
                # Only the exception type is logged: messages of HTTP errors can echo request details.
                logger.debug(
                    "%s failed (%s), attempt %d/%d; retrying in %.2fs",
                    what, type(exc).__name__, attempt, self.max_attempts, wait,
                )
                self.sleep(wait)
        raise AssertionError("unreachable: the loop returns or raises")
