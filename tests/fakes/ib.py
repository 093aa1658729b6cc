"""A fake ib_async `IB` that serves historical ticks and bars as TWS does, as ib_async's own objects.

Like TWS, `reqHistoricalTicks` returns the first `numberOfTicks` ticks at or after `startDateTime` and then the
rest of the last second (`complete_last_second=False` cuts exactly at the count instead, to test the other edge).
Ticks are stamped in New York time, as ib_async does when its default timezone is the TWS login zone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from ib_async import RequestError
from ib_async.objects import (
    BarData,
    HistoricalTickBidAsk,
    HistoricalTickLast,
    TickAttribBidAsk,
    TickAttribLast,
)

NEW_YORK = ZoneInfo("America/New_York")


def make_trades(start: datetime, count: int, per_second: int = 3) -> list[HistoricalTickLast]:
    """`count` trades, `per_second` in each second from `start`, each with a unique price."""
    return [
        HistoricalTickLast(
            time=datetime.fromtimestamp(start.timestamp() + i // per_second, NEW_YORK),
            tickAttribLast=TickAttribLast(pastLimit=False, unreported=i % 7 == 0),
            price=100.0 + i / 1000.0,
            size=float(1 + i % 5),
            exchange="ISLAND" if i % 2 else "NYSE",
            specialConditions="" if i % 3 else "  T",
        )
        for i in range(count)
    ]


def make_quotes(start: datetime, count: int, per_second: int = 2) -> list[HistoricalTickBidAsk]:
    return [
        HistoricalTickBidAsk(
            time=datetime.fromtimestamp(start.timestamp() + i // per_second, NEW_YORK),
            tickAttribBidAsk=TickAttribBidAsk(),
            priceBid=100.0 + i / 1000.0,
            priceAsk=100.01 + i / 1000.0,
            sizeBid=100.0 + i,
            sizeAsk=200.0,
        )
        for i in range(count)
    ]


@dataclass
class FakeIB:
    """Stands in for `ib_async.IB`: connect/disconnect, reqHistoricalTicks, reqHistoricalData."""

    ticks: dict[tuple[str, str], list[Any]] = field(default_factory=dict)
    """(symbol, whatToShow) -> ticks in time order."""
    bars: dict[str, list[BarData]] = field(default_factory=dict)
    complete_last_second: bool = True
    connect_error: BaseException | None = None
    request_error: BaseException | None = None
    """Raised by every historical request."""
    failures: list[BaseException | None] = field(default_factory=list)
    """Consumed one per historical request before answering: an error to raise, or None to answer normally."""
    clock: Callable[[], float] = lambda: 0.0
    requests: list[dict[str, Any]] = field(default_factory=list)
    connected: bool = False
    disconnect_calls: int = 0
    RequestTimeout: float = 0.0
    RaiseRequestErrors: bool = False

    def connect(self, host: str, port: int, clientId: int, timeout: float, readonly: bool) -> None:  # noqa: N803
        if self.connect_error is not None:
            raise self.connect_error
        self.connected = True

    def disconnect(self) -> None:
        self.disconnect_calls += 1
        self.connected = False

    def reqHistoricalTicks(  # noqa: N802 - ib_async's name
        self, contract: Any, startDateTime: datetime, endDateTime: str, numberOfTicks: int,  # noqa: N803
        whatToShow: str, useRth: bool, ignoreSize: bool = False, miscOptions: list | None = None,  # noqa: N803
    ) -> list[Any]:
        assert self.connected and useRth and endDateTime == ""
        self.requests.append({"symbol": contract.symbol, "what": whatToShow, "start": startDateTime,
                              "at": self.clock()})
        self._fail()
        # TWS resolves to whole seconds.
        start = startDateTime.astimezone(UTC).replace(microsecond=0)
        pending = [t for t in self.ticks.get((contract.symbol, whatToShow), []) if t.time >= start]
        page = pending[:numberOfTicks]
        if self.complete_last_second and page:
            page += [t for t in pending[numberOfTicks:] if t.time == page[-1].time]
        return page

    def reqHistoricalData(  # noqa: N802 - ib_async's name
        self, contract: Any, endDateTime: datetime, durationStr: str, barSizeSetting: str,  # noqa: N803
        whatToShow: str, useRTH: bool, formatDate: int = 1,  # noqa: N803
    ) -> list[BarData]:
        assert self.connected and useRTH and barSizeSetting == "1 min" and formatDate == 2
        self.requests.append({"symbol": contract.symbol, "what": "bars", "duration": durationStr, "at": self.clock()})
        self._fail()
        return self.bars.get(contract.symbol, [])


    def _fail(self) -> None:
        error = self.failures.pop(0) if self.failures else self.request_error
        if error is not None:
            assert self.RaiseRequestErrors or not isinstance(error, RequestError)
            raise error


class FakeClock:
    """A monotonic clock that only moves when something sleeps on it."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
