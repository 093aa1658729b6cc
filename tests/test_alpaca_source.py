"""AlpacaSource against a local fake of Alpaca's HTTP API, through the real alpaca-py clients."""

from __future__ import annotations

import logging
import random
import traceback
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import polars as pl
import pytest

from pipeline.contract.calendar import snapshot_times, trading_session
from pipeline.contract.occ import parse_occ, standard_occ
from pipeline.contract.schemas import RAW_COLUMNS
from pipeline.contract.validation import validate
from pipeline.sources import alpaca_source
from pipeline.sources.alpaca_history import OPTION_HISTORY_START
from pipeline.sources.alpaca_source import AlpacaSource
from pipeline.sources.base import (
    MarketSource,
    SourceAuthError,
    SourceError,
    SourceSubscriptionError,
    SourceUnavailableError,
    TradingSession,
)
from pipeline.sources.retry import RetryPolicy
from pipeline.sources.settings import SourceSettings, build_market_source
from tests.fakes.alpaca_server import DROP, HANG, PASS, FakeAlpacaState, Reply, fake_alpaca, option_day

KEY, SECRET = "PKTESTKEY123", "s3cr3t-VALUE-never-printed"
DAY = date(2024, 7, 5)
SESSION = TradingSession(DAY, datetime(2024, 7, 5, 13, 30, tzinfo=UTC), datetime(2024, 7, 5, 20, 0, tzinfo=UTC))
# The client's timeout where the fake server answers every request: never reached, so however loaded the machine,
# a slow reply cannot turn into a timeout and an extra retry (the tests count retries exactly).
ANSWERED_TIMEOUT_S = 10.0
# The client's timeout in the test with a HANG, which the fake never answers: the HANG costs exactly this long, and
# the same test's real replies must arrive within it. A localhost reply takes milliseconds even on a loaded
# machine, so 2 s keeps a wide margin for them while the test stays quick; shorter would buy little time and
# spend margin, longer would only slow the test.
HANG_TIMEOUT_S = 2.0


def _trade(t: str, price: float, i: int) -> dict:
    return {"t": t, "x": "V", "p": price, "s": 10, "c": ["@", "I"], "i": i, "z": "C"}


def _quote(t: str, bid: float) -> dict:
    return {"t": t, "ax": "V", "ap": bid + 0.02, "as": 3, "bx": "Q", "bp": bid, "bs": 4, "c": ["R"], "z": "C"}


def _state(**kwargs: object) -> FakeAlpacaState:
    state = FakeAlpacaState(api_key=KEY, secret_key=SECRET, **kwargs)
    state.trades = {
        "AAPL": [_trade(f"2024-07-05T13:3{m}:00.123456789Z", 100 + m, m) for m in range(3)],
        "MSFT": [_trade("2024-07-05T14:00:00Z", 400, 10), _trade("2024-07-05T20:00:00Z", 401, 11)],
    }
    state.quotes = {"AAPL": [_quote("2024-07-05T13:30:00Z", 100.0), _quote("2024-07-05T13:30:01Z", 100.01)]}
    state.bars = {"SPY": [{"t": "2024-07-05T13:30:00Z", "o": 1, "h": 2, "l": 0.5, "c": 1.5, "v": 100, "n": 3,
                           "vw": 1.2}]}
    return state


class SleepRecorder:
    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@pytest.fixture
def sleeps() -> SleepRecorder:
    return SleepRecorder()


def _source(url: str, sleeps: SleepRecorder, secret: str = SECRET, timeout_s: float = ANSWERED_TIMEOUT_S,
            rate_limit_budget_s: float | None = None, **kwargs: object) -> AlpacaSource:
    budget = {} if rate_limit_budget_s is None else {"rate_limit_budget_s": rate_limit_budget_s}
    retry = RetryPolicy(max_attempts=5, base_delay_s=1.0, sleep=sleeps, rng=random.Random(0), **budget)
    return AlpacaSource(KEY, secret, url_override=url, retry=retry, request_timeout_s=timeout_s, **kwargs)


@pytest.fixture
def state() -> FakeAlpacaState:
    return _state()


@pytest.fixture
def url(state: FakeAlpacaState) -> Iterator[str]:
    with fake_alpaca(state) as base:
        yield base


def test_trades_consume_every_page(state: FakeAlpacaState, url: str, sleeps: SleepRecorder) -> None:
    source = _source(url, sleeps)
    assert isinstance(source, MarketSource)
    frame = source.fetch("trades", SESSION, ["AAPL", "MSFT"])
    pages = [params.get("page_token") for path, params in state.requests if path == "/v2/stocks/trades"]
    assert pages == [None, "2", "4"]  # 5 trades, 2 per page: three pages, all read
    assert frame.columns == list(RAW_COLUMNS["trades"])
    # The MSFT trade at 20:00 is the close itself: outside [open, close).
    assert frame["price"].to_list() == [100.0, 101.0, 102.0, 400.0]
    assert frame["ts"][0] == datetime(2024, 7, 5, 13, 30, 0, 123456, tzinfo=UTC)
    assert frame.schema["ts"] == pl.Datetime("us", "UTC")
    assert set(frame["exchange"]) == {"V"} and set(frame["conditions"]) == {"@,I"}
    assert set(frame["source"]) == {"alpaca"} and set(frame["trading_day"]) == {DAY}
    assert sleeps.calls == []


def test_quotes_and_bars(state: FakeAlpacaState, url: str, sleeps: SleepRecorder) -> None:
    source = _source(url, sleeps, feed="iex")
    quotes = source.fetch("quotes", SESSION, ["AAPL"])
    assert quotes.select("bid", "ask", "bid_size", "ask_size").rows() == [(100.0, 100.02, 4.0, 3.0),
                                                                           (100.01, 100.03, 4.0, 3.0)]
    bars = source.fetch("bars", SESSION, ["SPY"])
    assert bars.select("interval", "open", "high", "low", "close", "volume").rows() == [
        ("1m", 1.0, 2.0, 0.5, 1.5, 100.0)
    ]
    assert {p.get("feed") for _, p in state.requests} == {"iex"}
    assert [p.get("timeframe") for path, p in state.requests if path == "/v2/stocks/bars"] == ["1Min"]


def _snapshot(bid: float, with_trade: bool = True) -> dict:
    snap = {
        "latestQuote": _quote("2024-07-05T18:59:00Z", bid),
        "impliedVolatility": 0.21,
        "greeks": {"delta": 0.5, "gamma": 0.02, "rho": 0.1, "theta": -0.3, "vega": 0.4},
    }
    if with_trade:
        snap["latestTrade"] = _trade("2024-07-05T18:58:00Z", bid + 0.01, 1)
    return snap


def test_option_chain_snapshot(state: FakeAlpacaState, url: str, sleeps: SleepRecorder) -> None:
    state.chains = {
        "SPY": {"SPY240719C00550000": _snapshot(5.0), "SPY240719P00545500": _snapshot(4.0, with_trade=False),
                "SPY240816C00560000": _snapshot(3.0)},
        "QQQ": {"QQQ240719C00480000": _snapshot(6.0)},
    }
    state.latest_trades = {"SPY": _trade("2024-07-05T18:59:59Z", 551.25, 9)}
    state.latest_quotes = {"SPY": _quote("2024-07-05T18:59:59Z", 551.0), "QQQ": _quote("2024-07-05T18:59:59Z", 480.0)}
    snapshot_time = datetime(2024, 7, 5, 19, 0, tzinfo=UTC)
    frame = _source(url, sleeps, clock=lambda: snapshot_time).fetch("option_snapshots", SESSION, ["SPY", "QQQ"])
    chain_pages = [p.get("page_token") for path, p in state.requests if path.endswith("/options/snapshots/SPY")]
    assert chain_pages == [None, "2"]
    assert frame.columns == list(RAW_COLUMNS["option_snapshots"])
    # Alpaca's unpadded symbols in the standard padded OCC form, as IBKR and the synthetic market write them.
    assert frame["contract"].to_list() == [
        "SPY   240719C00550000", "SPY   240719P00545500", "SPY   240816C00560000", "QQQ   240719C00480000"
    ]
    spy_put = frame.row(1, named=True)
    assert spy_put["expiry"] == date(2024, 7, 19) and spy_put["strike"] == 545.5 and spy_put["right"] == "P"
    assert spy_put["bid"] == 4.0 and spy_put["last"] is None and spy_put["iv"] == 0.21
    assert (spy_put["delta"], spy_put["gamma"], spy_put["theta"], spy_put["vega"]) == (0.5, 0.02, -0.3, 0.4)
    assert set(frame["ts"]) == {snapshot_time}
    # SPY from its last trade; QQQ has no latest trade, so its quote midpoint.
    assert frame["underlying_price"].to_list() == [551.25, 551.25, 551.25, 480.01]
    # Today is the live chain, observed, not rebuilt from bars.
    assert not frame["reconstructed"].any()
    assert not any(path.endswith(("/options/contracts", "/options/bars")) for path, _ in state.requests)


def test_option_chain_before_alpacas_option_history_is_empty_with_a_warning(
    state: FakeAlpacaState, url: str, sleeps: SleepRecorder, caplog: pytest.LogCaptureFixture
) -> None:
    day = OPTION_HISTORY_START - timedelta(days=1)
    assert day == date(2024, 1, 31)  # Alpaca: "historical option data since February 2024"
    source = _source(url, sleeps, clock=lambda: datetime(2024, 7, 9, 15, 0, tzinfo=UTC))
    with caplog.at_level(logging.WARNING):
        frame = source.fetch("option_snapshots", trading_session(day), ["SPY"])
    assert frame.height == 0 and frame.columns == list(RAW_COLUMNS["option_snapshots"])
    assert any("option history starts on 2024-02-01" in r.getMessage() for r in caplog.records)
    assert state.requests == []


def test_current_chain_stamps_each_underlying_with_its_fetch_time(
    state: FakeAlpacaState, url: str, sleeps: SleepRecorder
) -> None:
    state.chains = {"SPY": {"SPY240719C00550000": _snapshot(5.0)}, "QQQ": {"QQQ240719C00480000": _snapshot(6.0)}}
    state.latest_trades = {"SPY": _trade("2024-07-05T23:59:00Z", 551.25, 9), "QQQ": _trade("2024-07-05T23:59:00Z",
                                                                                             480.0, 3)}
    # 23:59:30 UTC is 19:59 on 5 July in New York; 04:30 UTC on 6 July is 00:30 on 6 July there.
    times = iter([datetime(2024, 7, 5, 23, 59, 30, tzinfo=UTC), datetime(2024, 7, 6, 4, 30, tzinfo=UTC)])
    frame = _source(url, sleeps, clock=lambda: next(times)).current_chain(["SPY", "QQQ"])
    assert frame.columns == list(RAW_COLUMNS["option_snapshots"])
    assert frame.select("contract", "ts", "trading_day").rows() == [
        ("SPY   240719C00550000", datetime(2024, 7, 5, 23, 59, 30, tzinfo=UTC), date(2024, 7, 5)),
        ("QQQ   240719C00480000", datetime(2024, 7, 6, 4, 30, tzinfo=UTC), date(2024, 7, 6)),
    ]
    assert frame["reconstructed"].to_list() == [False, False] and frame["null_reason"].null_count() == 2
    assert set(frame["source"]) == {"alpaca"}


PAST = trading_session(date(2024, 7, 5))
LATER = lambda: datetime(2025, 1, 2, 15, 0, tzinfo=UTC)  # noqa: E731 - a clock well after the reconstructed day


def _history_state(**kwargs: object) -> FakeAlpacaState:
    state = FakeAlpacaState(api_key=KEY, secret_key=SECRET, page_size=1000, **kwargs)
    option_day(state, PAST)
    return state


def test_past_day_is_reconstructed_from_contracts_and_bars(
    sleeps: SleepRecorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(alpaca_source, "OPTION_BARS_BATCH", 25)
    state = _history_state(contract_page_size=7)
    with fake_alpaca(state) as base:
        frame = _source(base, sleeps, clock=LATER).fetch("option_snapshots", PAST, ["SPY"])
    # Both listings (live and expired), every page of each, each page asked for with the token of the one before.
    pages = [(p["status"], p.get("page_token")) for path, p in state.requests if path == "/v2/options/contracts"]
    for status in ("active", "inactive"):
        tokens = [token for s, token in pages if s == status]
        assert len(tokens) > 1 and tokens == [None] + [str(7 * k) for k in range(1, len(tokens))]
    contracts = frame["contract"].unique().to_list()
    assert {c[6:12] for c in contracts} == {"240705", "240712", "240719"}  # expired and live ones both made it
    # Bars in batches of 25 symbols (a batch's later pages repeat its symbols with a page token).
    batches = [p["symbols"].split(",") for path, p in state.requests
               if path == "/v1beta1/options/bars" and "page_token" not in p]
    assert [len(b) for b in batches] == [25, 25, 10]
    assert sorted(standard_occ(c) for c in sum(batches, [])) == sorted(contracts)

    times = snapshot_times(PAST, 15)
    assert frame.height == len(contracts) * len(times)
    result = validate("option_snapshots", frame, PAST)
    assert result.rejected.height == 0 and result.accepted.height == frame.height
    assert frame["reconstructed"].all() and set(frame["source"]) == {"alpaca"} and set(frame["trading_day"]) == {PAST.trading_day}
    assert frame.select(pl.col("bid", "ask", "open_interest").null_count()).row(0) == (frame.height,) * 3
    assert frame["null_reason"].str.contains("bid, ask: Alpaca keeps no historical option quotes").all()
    assert frame["iv"].null_count() < frame.height  # most rows priced


def test_past_day_rows_at_t_ignore_bars_that_had_not_ended(sleeps: SleepRecorder) -> None:
    at = snapshot_times(PAST, 15)[3]
    frames, contract_queries = [], []
    for perturb in (False, True):
        state = _history_state()
        if perturb:
            for bars in [*state.option_bars.values(), state.bars["SPY"]]:
                for b in bars:
                    if datetime.fromisoformat(b["t"]) >= at:  # starts at T or later: ends after T
                        b.update(o=b["o"] * 1.4, h=b["h"] * 1.4, l=b["l"] * 1.4, c=b["c"] * 1.4, v=b["v"] * 3)
        with fake_alpaca(state) as base:
            frames.append(_source(base, sleeps, clock=LATER).fetch("option_snapshots", PAST, ["SPY"]))
        contract_queries.append([p for path, p in state.requests if path == "/v2/options/contracts"])
    before, after = frames
    assert contract_queries[0] == contract_queries[1]  # the chain is chosen at the first snapshot
    assert before.filter(pl.col("ts") <= at).equals(after.filter(pl.col("ts") <= at))
    assert not before.filter(pl.col("ts") > at).equals(after.filter(pl.col("ts") > at))


def test_parse_occ() -> None:
    assert parse_occ("SPY240719C00550000") == (date(2024, 7, 19), 550.0, "C")
    assert parse_occ("BRKB  250117P00412500") == (date(2025, 1, 17), 412.5, "P")
    assert parse_occ("not-an-option") is None
    # Alpaca's unpadded spelling becomes the standard 21-character one; anything else is kept as sent.
    assert standard_occ("SPY240719C00550000") == "SPY   240719C00550000"
    assert standard_occ("BRKB  250117P00412500") == "BRKB  250117P00412500"
    assert standard_occ("not-an-option") == "not-an-option"


@pytest.mark.parametrize(("key", "secret", "env"), [("", SECRET, "ALPACA_API_KEY"), (KEY, None, "ALPACA_SECRET_KEY")])
def test_missing_key_names_the_env_var(state: FakeAlpacaState, url: str, key: str, secret: str | None,
                                       env: str) -> None:
    source = AlpacaSource(key, secret, url_override=url)
    with pytest.raises(SourceAuthError, match=f"{env} is not set"):
        source.fetch("trades", SESSION, ["AAPL"])
    assert state.requests == []


def test_rejected_keys_name_both_variables(state: FakeAlpacaState, url: str, sleeps: SleepRecorder) -> None:
    with pytest.raises(SourceAuthError) as err:
        _source(url, sleeps, secret="wrong-secret").fetch("trades", SESSION, ["AAPL"])
    text = str(err.value)
    assert "rejected" in text and "ALPACA_API_KEY" in text and "ALPACA_SECRET_KEY" in text and "403" in text
    assert len(state.requests) == 1 and sleeps.calls == []  # an auth failure is not retried


def test_transient_failures_are_retried_with_backoff(state: FakeAlpacaState, url: str, sleeps: SleepRecorder) -> None:
    state.failures = [429, 503, DROP, HANG]
    frame = _source(url, sleeps, timeout_s=HANG_TIMEOUT_S).fetch("quotes", SESSION, ["AAPL"])
    assert frame.height == 2
    assert len(state.requests) == 5 and len(sleeps.calls) == 4  # one retry per injected failure, no more
    # Full jitter: each delay lies under its doubling cap.
    assert all(0 <= s <= cap for s, cap in zip(sleeps.calls, [1, 2, 4, 8], strict=True))


def test_a_failed_page_is_asked_for_again_not_page_one(
    state: FakeAlpacaState, url: str, sleeps: SleepRecorder
) -> None:
    state.failures = [PASS, 503, PASS, DROP]  # the second page fails, then the third
    frame = _source(url, sleeps).fetch("trades", SESSION, ["AAPL", "MSFT"])
    pages = [params.get("page_token") for path, params in state.requests if path == "/v2/stocks/trades"]
    assert pages == [None, "2", "2", "4", "4"]  # each failed page asked again where paging stood, never page 1
    assert frame["price"].to_list() == [100.0, 101.0, 102.0, 400.0]  # every row once
    assert len(sleeps.calls) == 2


def test_the_servers_retry_after_is_the_wait(state: FakeAlpacaState, url: str, sleeps: SleepRecorder) -> None:
    now = datetime(2024, 7, 5, 19, 0, tzinfo=UTC)
    state.failures = [
        Reply(429, headers={"Retry-After": "7"}),
        Reply(429, headers={"Retry-After": "Fri, 05 Jul 2024 19:00:30 GMT"}),  # the HTTP-date form
        Reply(429, headers={"X-RateLimit-Reset": str(int((now + timedelta(seconds=12)).timestamp()))}),  # Alpaca's
        Reply(503, headers={"Retry-After": "3"}),
    ]
    frame = _source(url, sleeps, clock=lambda: now).fetch("quotes", SESSION, ["AAPL"])
    assert frame.height == 2
    assert sleeps.calls == [7.0, 30.0, 12.0, 3.0]


def test_rate_limits_are_waited_out_past_the_attempt_count(
    state: FakeAlpacaState, url: str, sleeps: SleepRecorder
) -> None:
    state.failures = [429] * 8  # more than the 5 attempts other failures get
    frame = _source(url, sleeps).fetch("bars", SESSION, ["SPY"])
    assert frame.height == 1 and len(state.requests) == 9 and len(sleeps.calls) == 8
    assert sum(sleeps.calls) <= 300.0  # within the default budget


def test_rate_limits_past_the_budget_fail_naming_the_setting(
    state: FakeAlpacaState, url: str, sleeps: SleepRecorder
) -> None:
    state.failures = [Reply(429, headers={"Retry-After": "15"})] * 3
    with pytest.raises(SourceUnavailableError, match="HTTP 429") as err:
        _source(url, sleeps, rate_limit_budget_s=20.0).fetch("bars", SESSION, ["SPY"])
    assert "alpaca_rate_limit_budget_s" in str(err.value) and "20 s" in str(err.value)
    assert sleeps.calls == [15.0] and len(state.requests) == 2  # a second 15 s wait would pass the 20 s budget


def test_the_rate_limit_budget_is_a_source_setting() -> None:
    settings = SourceSettings(source="alpaca", alpaca_api_key=KEY, alpaca_secret_key=SECRET,
                              alpaca_rate_limit_budget_s=42.0)
    source = build_market_source(settings)
    assert isinstance(source, AlpacaSource) and source.retry.rate_limit_budget_s == 42.0
    assert SourceSettings().alpaca_rate_limit_budget_s == RetryPolicy().rate_limit_budget_s == 300.0


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (Reply(403, "subscription does not permit querying recent SIP data"), SourceSubscriptionError),
        (Reply(403, "OPRA agreement is not signed"), SourceSubscriptionError),
        (Reply(403, "forbidden."), SourceAuthError),
        (Reply(401, "unauthorized."), SourceAuthError),
    ],
)
def test_a_plan_limit_is_told_from_a_rejected_key(
    state: FakeAlpacaState, url: str, sleeps: SleepRecorder, reply: Reply, error: type[SourceError]
) -> None:
    state.failures = [reply]
    with pytest.raises(SourceError) as err:
        _source(url, sleeps).fetch("trades", SESSION, ["AAPL"])
    text = str(err.value)
    assert type(err.value) is error and reply.message in text and f"HTTP {reply.status}" in text
    if error is SourceSubscriptionError:
        assert "accepted the API keys" in text and "plan does not cover stock trades" in text
        assert "rejected" not in text and "ALPACA_SECRET_KEY" not in text
    else:
        assert "rejected the API keys" in text and "ALPACA_API_KEY" in text and "ALPACA_SECRET_KEY" in text
    assert len(state.requests) == 1 and sleeps.calls == []  # neither is retried


def test_retries_are_bounded_then_unavailable(state: FakeAlpacaState, url: str, sleeps: SleepRecorder) -> None:
    state.failures = [500] * 10
    with pytest.raises(SourceUnavailableError, match="HTTP 500 after 5 attempts"):
        _source(url, sleeps).fetch("bars", SESSION, ["SPY"])
    assert len(state.requests) == 5 and len(sleeps.calls) == 4


def test_client_error_is_not_retried(state: FakeAlpacaState, url: str, sleeps: SleepRecorder) -> None:
    state.failures = [422]
    with pytest.raises(SourceError, match="HTTP 422") as err:
        _source(url, sleeps).fetch("trades", SESSION, ["AAPL"])
    assert not isinstance(err.value, SourceUnavailableError | SourceAuthError)
    assert sleeps.calls == []


def test_unreachable_server_is_unavailable(sleeps: SleepRecorder, refused_port: int) -> None:
    source = _source(f"http://127.0.0.1:{refused_port}", sleeps)
    with pytest.raises(SourceUnavailableError, match="could not reach Alpaca"):
        source.fetch("trades", SESSION, ["AAPL"])
    assert len(sleeps.calls) == 4


def test_secret_never_appears_in_logs_errors_or_reprs(
    state: FakeAlpacaState, url: str, sleeps: SleepRecorder, caplog: pytest.LogCaptureFixture
) -> None:
    texts: list[str] = []
    for name in ("", "alpaca", "urllib3", "pipeline"):
        caplog.set_level(logging.DEBUG, logger=name)
    source = _source(url, sleeps)
    texts += [repr(source), str(source), repr(vars(source))]
    source.fetch("trades", SESSION, ["AAPL", "MSFT"])  # success
    state.failures = [429, DROP, 502]
    source.fetch("quotes", SESSION, ["AAPL"])  # retry path
    # Auth failure (a rotated secret that contains the real one) and retries running out.
    failures = [(_source(url, sleeps, secret=SECRET + "-rotated"), []), (source, [500] * 5)]
    for failing, script in failures:
        state.failures = list(script)
        with pytest.raises(SourceError) as err:
            failing.fetch("bars", SESSION, ["SPY"])
        texts += [str(err.value), repr(err.value), "".join(traceback.format_exception(err.value))]
    texts += [caplog.text] + [r.getMessage() for r in caplog.records]
    assert any(r.name.startswith("urllib3") for r in caplog.records)  # the HTTP stack's logs were captured
    assert any(r.name.startswith("pipeline") for r in caplog.records)
    for text in texts:
        assert SECRET not in text


def test_unknown_feed_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="'iex' on free plans"):
        AlpacaSource(KEY, SECRET, feed="nasdaq")
    assert AlpacaSource(KEY, SECRET, feed="iex").feed.value == "iex"


def test_a_delayed_live_chain_is_called_out(
    state: FakeAlpacaState, url: str, sleeps: SleepRecorder, caplog: pytest.LogCaptureFixture
) -> None:
    state.chains = {"SPY": {"SPY240719C00550000": _snapshot(5.0)}}  # quoted at 18:59 UTC
    state.latest_trades = {"SPY": _trade("2024-07-05T18:59:59Z", 551.25, 9)}
    warned, delayed = [], []
    for fetched in (datetime(2024, 7, 5, 19, 0, tzinfo=UTC), datetime(2024, 7, 5, 19, 15, tzinfo=UTC)):
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            chain = _source(url, sleeps, clock=lambda t=fetched: t).current_chain(["SPY"])
        warned.append(any("delayed feed" in r.getMessage() for r in caplog.records))
        delayed.append(chain["delayed"].to_list())
    assert warned == [False, True]  # a minute old is live; 16 minutes old is the free plans' delayed feed
    assert delayed == [[False], [True]]  # and the rows say so, not only the log
