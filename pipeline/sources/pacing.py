"""Request pacing for IBKR historical data, so TWS never answers with a pacing violation (error 162).

IBKR's documented limits: no identical historical request within 15 s, no six or more requests for the same
contract and tick type within 2 s, and no more than 60 requests in any 10-minute window. The clock and the sleep
are injectable so tests can check the schedule without waiting.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)


@dataclass
class Pacer:
    """Blocks (through `sleep`) until one more historical request is allowed, then records it."""

    max_requests: int = 60
    """Requests allowed in any `window_s` window."""
    window_s: float = 600.0
    identical_gap_s: float = 15.0
    """Minimum gap between two identical requests."""
    burst_requests: int = 5
    """Requests allowed for one (contract, tick type) in any `burst_window_s` window."""
    burst_window_s: float = 2.0
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    _sent: deque[tuple[float, Hashable, Hashable]] = field(default_factory=deque, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.max_requests < 1 or self.burst_requests < 1:
            raise ValueError("max_requests and burst_requests must be >= 1")

    def _wait_needed(self, now: float, request: Hashable, group: Hashable) -> float:
        while self._sent and now - self._sent[0][0] >= max(self.window_s, self.identical_gap_s, self.burst_window_s):
            self._sent.popleft()
        waits = [0.0]
        in_window = [t for t, _, _ in self._sent if now - t < self.window_s]
        if len(in_window) >= self.max_requests:
            waits.append(in_window[-self.max_requests] + self.window_s - now)
        same_group = [t for t, _, g in self._sent if g == group and now - t < self.burst_window_s]
        if len(same_group) >= self.burst_requests:
            waits.append(same_group[-self.burst_requests] + self.burst_window_s - now)
        identical = [t for t, r, _ in self._sent if r == request]
        if identical:
            waits.append(identical[-1] + self.identical_gap_s - now)
        return max(waits)

    def wait(self, request: Hashable, group: Hashable) -> float:
        """Wait until `request` (its full parameters) in `group` (contract, tick type) may be sent; returns the
        seconds waited."""
        waited = 0.0
        while (needed := self._wait_needed(self.clock(), request, group)) > 0:
            logger.debug("IBKR pacing: waiting %.1fs before %s", needed, request)
            self.sleep(needed)
            waited += needed
        self._sent.append((self.clock(), request, group))
        return waited
