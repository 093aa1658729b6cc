"""IBKRSource against a fake ib_async IB returning ib_async's own tick and bar objects."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from ib_async import IB, RequestError
from ib_async.objects import BarData

from pipeline.contract.calendar import TradingSession
from pipeline.contract.schemas import RAW_COLUMNS
from pipeline.sources.base import MarketSource, SourceError, SourceSubscriptionError, SourceUnavailableError
from pipeline.sources.ibkr_connection import retry_policy
from pipeline.sources.ibkr_source import MAX_TICKS_PER_REQUEST, IBKRSource
from pipeline.sources.pacing import Pacer
from pipeline.sources.retry import RetryPolicy
from tests.fakes.ib import FakeClock, FakeIB, make_quotes, make_trades

DAY = date(2024, 7, 5)
OPEN = datetime(2024, 7, 5, 13, 30, tzinfo=UTC)
CLOSE = datetime(2024, 7, 5, 20, 0, tzinfo=UTC)
SESSION = TradingSession(DAY, OPEN, CLOSE)


def _retry(clock: FakeClock) -> RetryPolicy:
    """The source's default retries, sleeping on the fake clock."""
    policy = retry_policy()
    policy.sleep, policy.rng = clock.sleep, random.Random(0)
    return policy


def _source(ib: FakeIB, clock: FakeClock, **pacing: float) -> IBKRSource:
    pacer = Pacer(clock=clock, sleep=clock.sleep, **pacing)
    ib.clock = clock
    return IBKRSource("127.0.0.1", 7497, 17, ib_factory=lambda: ib, pacer=pacer, retry=_retry(clock))


@pytest.mark.parametrize("complete_last_second", [True, False], ids=["tws-completes-second", "cut-at-count"])
def test_trades_page_through_the_session_without_duplicates_or_gaps(complete_last_second: bool) -> None:
    ticks = make_trades(OPEN, 3500, per_second=3)
    after_close = make_trades(CLOSE, 4)  # TWS may hand back ticks at/after the close on the last page
    ib = FakeIB(ticks={("AAPL", "TRADES"): ticks + after_close}, complete_last_second=complete_last_second)
    clock = FakeClock()
    source = _source(ib, clock)
    assert isinstance(source, MarketSource)
    frame = source.fetch("trades", SESSION, ["AAPL"])
    assert len([r for r in ib.requests if r["what"] == "TRADES"]) >= 4  # > 3 pages of 1000
    assert frame.columns == list(RAW_COLUMNS["trades"])
    assert frame.height == 3500
    assert frame["price"].to_list() == [t.price for t in ticks]  # every tick once, in order
    assert frame["ts"].to_list() == [t.time.astimezone(UTC) for t in ticks]
    assert frame.schema["ts"] == pl.Datetime("us", "UTC")
    first = frame.row(0, named=True)
    assert (first["exchange"], first["conditions"], first["size"]) == ("NYSE", "  T", 1.0)
    assert frame.row(1, named=True)["conditions"] is None
    assert set(frame["source"]) == {"ibkr"} and set(frame["trading_day"]) == {DAY}
    assert ib.disconnect_calls == 1


def test_quotes_from_bid_ask_ticks_for_each_symbol() -> None:
    ib = FakeIB(ticks={("SPY", "BID_ASK"): make_quotes(OPEN, 2100), ("QQQ", "BID_ASK"): make_quotes(OPEN, 10)})
    frame = _source(ib, FakeClock()).fetch("quotes", SESSION, ["SPY", "QQQ"])
    assert frame.columns == list(RAW_COLUMNS["quotes"])
    assert frame.group_by("symbol").len().sort("symbol").rows() == [("QQQ", 10), ("SPY", 2100)]
    assert frame.row(0, named=True)["bid"] == 100.0 and frame.row(0, named=True)["ask"] == 100.01
    assert frame.filter(pl.col("symbol") == "SPY")["bid_size"].is_unique().all()


def test_pacing_is_honoured() -> None:
    ib = FakeIB(ticks={(s, "TRADES"): make_trades(OPEN, 2500) for s in ("AAPL", "MSFT")})
    clock = FakeClock()
    source = _source(ib, clock, max_requests=4, window_s=600.0, burst_requests=2, burst_window_s=2.0)
    frame = source.fetch("trades", SESSION, ["AAPL", "MSFT"])
    assert frame.height == 5000
    times = [r["at"] for r in ib.requests]
    assert len(times) == 6 and clock.sleeps  # 3 pages per symbol: the 5th request had to wait
    for i, t in enumerate(times):
        assert sum(1 for u in times[i:] if u - t < 600.0) <= 4
    for symbol in ("AAPL", "MSFT"):
        same = [r["at"] for r in ib.requests if r["symbol"] == symbol]
        assert all(b - a >= 2.0 for a, b in zip(same, same[2:], strict=False))


def test_pacer_spaces_identical_requests() -> None:
    clock = FakeClock()
    pacer = Pacer(clock=clock, sleep=clock.sleep)
    assert pacer.wait(("AAPL", "TRADES", OPEN), group=("AAPL", "TRADES")) == 0.0
    assert pacer.wait(("AAPL", "TRADES", OPEN), group=("AAPL", "TRADES")) == pytest.approx(15.0)
    assert pacer.wait(("AAPL", "TRADES", CLOSE), group=("AAPL", "TRADES")) == 0.0


def test_bars_from_historical_data() -> None:
    bars = [BarData(date=OPEN + timedelta(minutes=m), open=1.0, high=2.0, low=0.5, close=1.5, volume=10 + m,
                    average=1.2, barCount=3) for m in (-1, 0, 1, 390)]
    ib = FakeIB(bars={"SPY": bars})
    frame = _source(ib, FakeClock()).fetch("bars", SESSION, ["SPY"])
    assert frame["ts"].to_list() == [OPEN, OPEN + timedelta(minutes=1)]  # pre-open and at-close bars dropped
    assert set(frame["interval"]) == {"1m"} and frame["volume"].to_list() == [10.0, 11.0]
    assert ib.requests[0]["duration"] == "23400 S"


def test_option_snapshots_are_empty_without_connecting() -> None:
    ib = FakeIB(connect_error=ConnectionRefusedError(111, "refused"))
    frame = _source(ib, FakeClock()).fetch("option_snapshots", SESSION, ["SPY"])
    assert frame.height == 0 and frame.columns == list(RAW_COLUMNS["option_snapshots"])


def test_connection_refused_is_unavailable_and_disconnects() -> None:
    ib = FakeIB(connect_error=ConnectionRefusedError(111, "Connect call failed"))
    with pytest.raises(SourceUnavailableError) as err:
        _source(ib, FakeClock()).fetch("trades", SESSION, ["AAPL"])
    assert "could not reach TWS/IB Gateway at 127.0.0.1:7497 (client id 17): is it running with the API enabled?" in str(
        err.value
    )
    assert ib.disconnect_calls == 1


def test_connect_timeout_is_unavailable() -> None:
    ib = FakeIB(connect_error=TimeoutError())
    with pytest.raises(SourceUnavailableError, match="could not reach TWS/IB Gateway"):
        _source(ib, FakeClock()).fetch("quotes", SESSION, ["AAPL"])
    assert ib.disconnect_calls == 1


def test_lost_connection_mid_fetch_is_unavailable_and_disconnects() -> None:
    ib = FakeIB(ticks={("AAPL", "TRADES"): make_trades(OPEN, 10)}, request_error=ConnectionError("Not connected"))
    with pytest.raises(SourceUnavailableError, match="lost or timed out"):
        _source(ib, FakeClock()).fetch("trades", SESSION, ["AAPL"])
    assert ib.disconnect_calls == 1


def test_real_ib_client_against_a_closed_port(refused_port: int) -> None:
    source = IBKRSource("127.0.0.1", refused_port, 23, ib_factory=IB, connect_timeout_s=2.0)  # ib_async's real client
    with pytest.raises(SourceUnavailableError, match=f"127.0.0.1:{refused_port} \\(client id 23\\)"):
        source.fetch("trades", SESSION, ["AAPL"])


def test_unknown_table() -> None:
    with pytest.raises(SourceError, match="unknown table"):
        _source(FakeIB(), FakeClock()).fetch("ticks", SESSION, ["AAPL"])


@pytest.mark.parametrize(
    ("code", "message", "expected"),
    [
        (200, "No security definition has been found for the request", "no security definition for 'AAPL'"),
        (354, "Requested market data is not subscribed.", "no market data subscription"),
        (162, "Historical Market Data Service error message:API historical data query cancelled: pacing violation",
         "pacing violation"),
    ],
)
def test_tws_request_errors_are_explained(code: int, message: str, expected: str) -> None:
    ib = FakeIB(request_error=RequestError(7, code, message))
    with pytest.raises(SourceError, match=expected):
        _source(ib, FakeClock()).fetch("trades", SESSION, ["AAPL"])
    assert ib.disconnect_calls == 1


def test_no_data_answer_is_an_empty_day() -> None:
    ib = FakeIB(request_error=RequestError(7, 162, "Historical Market Data Service error message:HMDS query returned "
                                                   "no data: AAPL@SMART Trades"))
    frame = _source(ib, FakeClock()).fetch("trades", SESSION, ["AAPL"])
    assert frame.height == 0 and frame.columns == list(RAW_COLUMNS["trades"])
    assert len(ib.requests) == 1  # an answer, not a failure: not asked again


CANCELLED = "Historical Market Data Service error message:API historical data query cancelled: 7"
RESTORED = "Connectivity between IB and Trader Workstation has been restored - data lost."


def test_transient_tws_errors_are_asked_again_where_paging_stood() -> None:
    ticks = make_trades(OPEN, 2500, per_second=3)
    ib = FakeIB(ticks={("AAPL", "TRADES"): ticks},
                failures=[None, RequestError(8, 162, CANCELLED), TimeoutError(), RequestError(8, 1102, RESTORED)])
    clock = FakeClock()
    frame = _source(ib, clock).fetch("trades", SESSION, ["AAPL"])
    assert frame["price"].to_list() == [t.price for t in ticks]  # every tick once, in order
    starts = [r["start"] for r in ib.requests]
    assert len(starts) == 6 and starts[0] == OPEN and starts[1] == starts[2] == starts[3] == starts[4] != starts[5]
    # The second page was asked again three times, never the first; and each repeat kept IBKR's 15 s gap between
    # identical requests (a quicker repeat would be a pacing violation itself).
    repeats = [r["at"] for r in ib.requests[1:5]]
    assert all(b - a >= 15.0 for a, b in zip(repeats, repeats[1:], strict=False))


@pytest.mark.parametrize(
    ("error", "expected", "requests"),
    [
        (TimeoutError(), "lost or timed out", 4),
        (RequestError(8, 1100, "Connectivity between IB and Trader Workstation has been lost."),
         r"kept failing TRADES for AAPL \(error 1100\) through the retries", 4),
        (RequestError(8, 200, "No security definition has been found for the request"), "no security definition", 1),
    ],
)
def test_retries_are_bounded_and_only_for_transient_errors(error: BaseException, expected: str,
                                                           requests: int) -> None:
    ib = FakeIB(ticks={("AAPL", "TRADES"): make_trades(OPEN, 10)}, request_error=error, RaiseRequestErrors=True)
    with pytest.raises(SourceError, match=expected):
        _source(ib, FakeClock()).fetch("trades", SESSION, ["AAPL"])
    assert len(ib.requests) == requests and requests <= retry_policy().max_attempts


def test_a_pacing_violation_is_waited_out_within_ibkrs_pacing_window() -> None:
    message = "Historical Market Data Service error message:Historical data request pacing violation"
    ib = FakeIB(ticks={("AAPL", "TRADES"): make_trades(OPEN, 10)}, RaiseRequestErrors=True,
                failures=[RequestError(8, 162, message)] * 6)
    clock = FakeClock()
    frame = _source(ib, clock).fetch("trades", SESSION, ["AAPL"])
    assert frame.height == 10 and len(ib.requests) == 7  # more than the 4 attempts: pacing is waited out
    assert clock.now - 1000.0 <= 600.0 + 15.0 * 7


def test_a_missing_permission_is_a_subscription_error() -> None:
    message = "Historical Market Data Service error message:No market data permissions for NYSE STK"
    ib = FakeIB(request_error=RequestError(8, 162, message), RaiseRequestErrors=True)
    with pytest.raises(SourceSubscriptionError, match="no market data subscription"):
        _source(ib, FakeClock()).fetch("trades", SESSION, ["AAPL"])
    assert len(ib.requests) == 1


def test_the_readme_states_the_tick_throughput_the_pacer_allows() -> None:
    pacer = Pacer()
    per_minute = MAX_TICKS_PER_REQUEST * pacer.max_requests / (pacer.window_s / 60.0)
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    ibkr = " ".join(readme[readme.index("- **Interactive Brokers.**") : readme.index("### Collecting option")].split())
    assert f"about {per_minute:,.0f} ticks a minute" in ibkr and "hours" in ibkr
