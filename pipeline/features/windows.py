"""Feature windows and their units: a window says how far back a column looks, in minutes, bars, trading days,
or the session.

"minutes" is a time horizon (converted to bars for coarser bars; shorter than a bar it does not fit and stays
null), "bars" a bar count on any interval (daily bars included), "trading days" a count of sessions read from
daily closes, "session" the open to ts (reset at each open). `warmup` is how many units of history precede a
window's first value; `settle` how many bars a recursive (exponentially smoothed) value reads before the bar it
was seeded with weighs under `SEED_WEIGHT`. `pipeline.features.lookback` turns the larger of the two into the
lookback read from earlier days.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MINUTES, BAR_COUNT, TRADING_DAYS, SESSION = "minutes", "bars", "trading days", "session"
WINDOW_UNITS: tuple[str, ...] = (MINUTES, BAR_COUNT, TRADING_DAYS, SESSION)
DAY_MINUTES = 24 * 60
SEED_WEIGHT = 1e-3
"""What the first bar of a lookback may still weigh in a recursive average: below it, where the series starts
no longer shows (stockstats, which FinRL uses, starts at a symbol's first bar; the pipeline at its lookback's)."""


def ewm_settle(*alphas: float) -> int:
    """Bars until the seed of chained recursive averages (y = (1 - a) y_prev + a x) weighs under SEED_WEIGHT.

    Each average in the chain (e.g. MACD's signal EMA over the MACD EMAs) adds its own bars.
    """
    return sum(math.ceil(math.log(SEED_WEIGHT) / math.log(1.0 - a)) for a in alphas)


@dataclass(frozen=True)
class Window:
    """How far back a column looks: `text` in `unit` ("-" when the value is an instant or a key).

    `shortest` is the shortest window of the column in its unit (a minutes window shorter than a bar does not
    fit); `warmup` is how many units of history precede the first value on a gap-free series; `settle` (bars
    windows of recursive averages only) how many bars the value reads before its seed no longer shows.
    """

    text: str
    unit: str = "-"
    shortest: int = 0
    warmup: int = 0
    settle: int = 0

    def fits(self, interval_minutes: int) -> bool:
        """Whether this window can be computed on bars of `interval_minutes` (only minute horizons can fail)."""
        return self.unit != MINUTES or self.shortest >= interval_minutes

    def rows(self, interval_minutes: int) -> int:
        """Rows of history before the first value on bars of this interval (0 for an instant or a session)."""
        if self.unit == MINUTES:
            return math.ceil(self.warmup / interval_minutes)
        return self.warmup if self.unit in (BAR_COUNT, TRADING_DAYS) else 0

    def lookback_rows(self, interval_minutes: int) -> int:
        """Rows of history the value reads on bars of this interval: its warm-up, or longer where it settles."""
        return max(self.rows(interval_minutes), self.settle)

    def __str__(self) -> str:
        return self.text if self.unit == "-" else f"{self.text} {self.unit}"


def _window(unit: str, *lengths: int, warmup: int, text: str | None = None, settle: int = 0) -> Window:
    return Window(text or ", ".join(map(str, lengths)), unit, min(lengths), warmup, settle)


def minutes(*lengths: int, warmup: int, text: str | None = None) -> Window:
    return _window(MINUTES, *lengths, warmup=warmup, text=text)


def bars(*lengths: int, warmup: int, text: str | None = None, settle: int = 0) -> Window:
    return _window(BAR_COUNT, *lengths, warmup=warmup, text=text, settle=settle)


def days(*lengths: int, warmup: int, text: str | None = None) -> Window:
    return _window(TRADING_DAYS, *lengths, warmup=warmup, text=text)


NONE = Window("-")
AT_TS = Window("at ts")
ONE_BAR = bars(1, warmup=0)
OPEN_TO_TS = Window("open to ts", SESSION)
