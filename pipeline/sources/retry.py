"""Bounded retries with exponential backoff and full jitter, for the network market sources.

A source tells each error apart with a classifier: not worth retrying (None), or a `Transient` failure that says
whether the server refused for the request rate and how long it asked to wait. Rate limits are waited out within a
time budget instead of a count of attempts: a per-minute limit can take longer to clear than a few quick retries.
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


@dataclass(frozen=True)
class Transient:
    """A failure worth retrying, as its source classified it."""

    rate_limited: bool = False
    """The server refused for the request rate (HTTP 429, a pacing violation): waited out within
    `RetryPolicy.rate_limit_budget_s`, not counted against `max_attempts`."""
    wait_s: float | None = None
    """The wait the server asked for (Retry-After), used instead of the backoff; None: it asked for none."""


Classifier = Callable[[BaseException], Transient | None]
"""An error -> how to retry it, or None where retrying cannot help."""


@dataclass
class RetryPolicy:
    """How often and how long to retry a transient failure."""

    max_attempts: int = 5
    """Total attempts, the first one included, counting the failures that are not rate limits; after the last one
    the error propagates."""
    base_delay_s: float = 1.0
    """Delay cap before the second attempt; it doubles with each further attempt."""
    max_delay_s: float = 30.0
    """Upper bound on any backoff delay (a wait the server asks for is taken as asked, within the budget)."""
    rate_limit_budget_s: float = 300.0
    """Total seconds one call may wait on the server's say-so: on rate limits, and on any wait it asks for. A wait
    that would go past it is not taken: the error propagates at once."""
    sleep: Callable[[float], None] = time.sleep
    """Injected in tests so nothing really waits."""
    rng: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.rate_limit_budget_s < 0:
            raise ValueError(f"rate_limit_budget_s must be >= 0, got {self.rate_limit_budget_s}")

    def delay(self, attempt: int) -> float:
        """Full-jitter delay after failed attempt number `attempt` (1-based): uniform in [0, cap]."""
        cap = min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1))
        return self.rng.uniform(0.0, cap)

    def call(self, fn: Callable[[], T], classify: Classifier, what: str) -> T:
        """Run `fn`, retrying while it raises an error `classify` calls transient; re-raise the last one.

        `what` names the operation in the debug log; it must not contain secrets.
        """
        failures = attempts = 0  # every failure (the backoff's exponent); those that are not rate limits
        server_waited = 0.0
        while True:
            try:
                return fn()
            except Exception as exc:
                failure = classify(exc)
                if failure is None:
                    raise
                failures += 1
                if not failure.rate_limited:
                    attempts += 1
                    if attempts >= self.max_attempts:
                        raise
                wait = self.delay(failures) if failure.wait_s is None else max(0.0, failure.wait_s)
                if failure.rate_limited or failure.wait_s is not None:
                    if server_waited + wait > self.rate_limit_budget_s:
                        raise
                    server_waited += wait
                # Only the exception type is logged: messages of HTTP errors can echo request details.
                logger.debug(
                    "%s failed (%s%s), failure %d; retrying in %.2fs",
                    what, type(exc).__name__, ", rate limited" if failure.rate_limited else "", failures, wait,
                )
                self.sleep(wait)
