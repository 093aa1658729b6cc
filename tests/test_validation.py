"""Row validation: each malformed kind is quarantined with a reason naming it; rows_read = accepted + rejected."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import polars as pl
import pytest
from pandera.config import ValidationDepth, config_context

from pipeline.contract.calendar import TradingSession, trading_session
from pipeline.contract.schemas import RAW_COLUMNS
from pipeline.contract.validation import ValidationResult, rejected_share, validate

DAY = date(2024, 7, 5)
SESSION = TradingSession(DAY, datetime(2024, 7, 5, 13, 30, tzinfo=UTC), datetime(2024, 7, 5, 20, 0, tzinfo=UTC))
T0 = datetime(2024, 7, 5, 14, 0, tzinfo=UTC)


def frame(table: str, rows: list[dict]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=RAW_COLUMNS[table])


def trade(**overrides: object) -> dict:
    row = {"symbol": "SPY", "ts": T0, "price": 500.0, "size": 100.0, "exchange": "P", "conditions": None,
           "source": "test", "trading_day": DAY}
    return row | overrides


def quote(**overrides: object) -> dict:
    row = {"symbol": "SPY", "ts": T0, "bid": 499.9, "ask": 500.1, "bid_size": 3.0, "ask_size": 4.0,
           "source": "test", "trading_day": DAY}
    return row | overrides


def bar(**overrides: object) -> dict:
    row = {"symbol": "SPY", "ts": T0, "interval": "1m", "open": 10.0, "high": 11.0, "low": 9.0, "close": 10.5,
           "volume": 1000.0, "source": "test", "trading_day": DAY}
    return row | overrides


def option(**overrides: object) -> dict:
    row = {"underlying": "SPY", "underlying_price": 500.0, "contract": "SPY240719C00500000",
           "expiry": date(2024, 7, 19), "strike": 500.0, "right": "C", "ts": T0, "bid": 5.0, "ask": 5.2,
           "last": 5.1, "volume": 10.0, "open_interest": 100.0, "iv": 0.15, "delta": 0.5, "gamma": 0.02,
           "theta": -0.1, "vega": 0.3, "reconstructed": False, "null_reason": None, "delayed": False,
           "source": "test", "trading_day": DAY}
    return row | overrides


def check_invariant(result: ValidationResult) -> None:
    assert result.rows_read == result.accepted.height + result.rejected.height
    assert result.accepted.schema == pl.Schema(RAW_COLUMNS[result.table])


def only_reason(result: ValidationResult) -> str:
    check_invariant(result)
    assert result.rejected.height == 1, result.rejected
    return result.rejected["reason"].item()


def test_clean_rows_are_all_accepted() -> None:
    cases = {
        "trades": [trade(), trade(ts=T0 + timedelta(seconds=1))],
        "quotes": [quote(), quote(ts=T0 + timedelta(seconds=1))],
        "bars": [bar(), bar(ts=T0 + timedelta(minutes=1))],
        "option_snapshots": [option(), option(contract="SPY240719P00500000", right="P", delta=-0.5)],
    }
    for table, rows in cases.items():
        result = validate(table, frame(table, rows), SESSION)
        check_invariant(result)
        assert (result.accepted.height, result.rejected.height) == (2, 0), table
        assert rejected_share(result) == 0.0


def test_nan_and_inf_are_rejected() -> None:
    result = validate("trades", frame("trades", [trade(), trade(price=float("nan"), ts=T0 + timedelta(seconds=1)),
                                                trade(size=float("inf"), ts=T0 + timedelta(seconds=2))]), SESSION)
    check_invariant(result)
    reasons = result.rejected["reason"].to_list()
    assert "price is null or NaN" in reasons[0] and "price is not finite (NaN/inf)" in reasons[0]
    assert "size is not finite (NaN/inf)" in reasons[1]
    assert json.loads(result.rejected["payload"][0])["price"] == "NaN"


def test_negative_price_and_size() -> None:
    result = validate("trades", frame("trades", [trade(price=-1.0, size=-5.0)]), SESSION)
    assert only_reason(result) == "price > 0; size >= 0"


def test_crossed_quote() -> None:
    result = validate("quotes", frame("quotes", [quote(), quote(bid=501.0, ts=T0 + timedelta(seconds=1))]), SESSION)
    assert only_reason(result) == "crossed quote: bid > ask"
    payload = json.loads(result.rejected["payload"].item())
    assert payload["bid"] == 501.0 and payload["ts"].startswith("2024-07-05T14:00:01")


def test_duplicate_keeps_the_first() -> None:
    rows = [trade(conditions="first"), trade(conditions="second"), trade(price=501.0)]
    result = validate("trades", frame("trades", rows), SESSION)
    assert only_reason(result) == "duplicate key"
    assert result.accepted["conditions"].to_list() == ["first", None]
    assert json.loads(result.rejected["payload"].item())["conditions"] == "second"


def test_out_of_session_timestamps() -> None:
    rows = [trade(ts=SESSION.open - timedelta(seconds=1)), trade(ts=SESSION.close), trade(ts=SESSION.open),
            trade(ts=SESSION.close + timedelta(microseconds=1))]
    result = validate("trades", frame("trades", rows), SESSION)
    check_invariant(result)
    assert result.accepted.height == 2
    assert all(r.startswith("ts outside the session 13:30-20:00 UTC") for r in result.rejected["reason"])


def test_intraday_bar_starting_at_the_close_is_after_hours() -> None:
    last = SESSION.close - timedelta(minutes=1)
    rows = [bar(ts=SESSION.open), bar(ts=last), bar(ts=SESSION.close)]
    result = validate("bars", frame("bars", rows), SESSION)
    assert only_reason(result) == "ts outside the session 13:30-20:00 UTC"
    assert result.accepted["ts"].to_list() == [SESSION.open, last]


def test_daily_bar_may_carry_the_session_date_but_not_another() -> None:
    midnight_utc = datetime(2024, 7, 5, tzinfo=UTC)
    midnight_ny = datetime(2024, 7, 5, 4, tzinfo=UTC)
    rows = [bar(interval="1d", ts=midnight_utc), bar(interval="1d", ts=midnight_ny, symbol="QQQ"),
            bar(interval="1d", ts=datetime(2024, 7, 8, tzinfo=UTC), symbol="IWM"),
            bar(interval="1m", ts=midnight_utc, symbol="DIA")]
    result = validate("bars", frame("bars", rows), SESSION)
    check_invariant(result)
    assert result.accepted["symbol"].to_list() == ["SPY", "QQQ"]
    assert result.rejected.height == 2


def test_ohlc_consistency_and_volume() -> None:
    rows = [bar(high=9.5), bar(ts=T0 + timedelta(minutes=1), low=10.8), bar(ts=T0 + timedelta(minutes=2), volume=-1)]
    result = validate("bars", frame("bars", rows), SESSION)
    check_invariant(result)
    reasons = result.rejected["reason"].to_list()
    assert reasons[0] == reasons[1] == "OHLC inconsistent: need low <= open, close <= high"
    assert reasons[2] == "volume >= 0"


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"iv": 0.0}, "iv > 0"),
        ({"delta": 1.2}, "|delta| > 1"),
        ({"gamma": -0.01}, "gamma >= 0"),
        ({"vega": -0.1}, "vega >= 0"),
        ({"right": "X"}, "right not in {C, P}"),
        ({"strike": 0.0}, "strike > 0"),
        ({"expiry": date(2024, 7, 3)}, "expiry before trading_day"),
        ({"bid": 6.0}, "crossed quote: bid > ask"),
    ],
)
def test_option_fields_out_of_range(overrides: dict, reason: str) -> None:
    result = validate("option_snapshots", frame("option_snapshots", [option(**overrides)]), SESSION)
    assert only_reason(result) == reason


def test_option_without_greeks_is_accepted() -> None:
    row = option(iv=None, delta=None, gamma=None, theta=None, vega=None, last=None)
    result = validate("option_snapshots", frame("option_snapshots", [row]), SESSION)
    check_invariant(result)
    assert result.accepted.height == 1


def test_parse_errors_and_uncastable_types() -> None:
    raw = frame("trades", [trade(), trade(ts=T0 + timedelta(seconds=1), price=None)]).with_columns(
        _parse_error=pl.Series([None, "bad value for column price: 'abc'"], dtype=pl.Utf8)
    )
    result = validate("trades", raw, SESSION)
    assert only_reason(result) == "bad value for column price: 'abc'; price is null or NaN"
    assert "_parse_error" not in json.loads(result.rejected["payload"].item())

    as_text = frame("trades", [trade(), trade(ts=T0 + timedelta(seconds=1))]).with_columns(
        pl.Series("size", ["100", "lots"])
    )
    result = validate("trades", as_text, SESSION)
    assert only_reason(result).startswith("size is not a Float64: 'lots'")
    assert result.accepted["size"].to_list() == [100.0]


def test_null_keys_and_wrong_trading_day() -> None:
    rows = [trade(symbol=None), trade(exchange=None, ts=T0 + timedelta(seconds=1)),
            trade(trading_day=date(2024, 7, 8), ts=T0 + timedelta(seconds=2))]
    result = validate("trades", frame("trades", rows), SESSION)
    check_invariant(result)
    assert result.rejected["reason"].to_list() == ["symbol is null", "exchange is null", "trading_day is not 2024-07-05"]
    assert result.rejected["trading_day"].to_list() == [DAY] * 3


def test_missing_columns_and_unknown_table_raise() -> None:
    with pytest.raises(ValueError, match=r"lacks columns \['bid_size', 'ask_size'\]"):
        validate("quotes", frame("quotes", [quote()]).drop("bid_size", "ask_size"), SESSION)
    with pytest.raises(ValueError, match="unknown raw table"):
        validate("ticks", frame("trades", [trade()]), SESSION)


def test_empty_frame_is_valid() -> None:
    result = validate("quotes", pl.DataFrame(schema=RAW_COLUMNS["quotes"]), SESSION)
    check_invariant(result)
    assert (result.rows_read, result.accepted.height, result.rejected.height) == (0, 0, 0)
    assert rejected_share(result) == 0.0


def test_many_failures_keep_the_invariant_and_the_share() -> None:
    rows = [trade(ts=T0 + timedelta(seconds=i), price=-1.0 if i % 4 == 0 else 500.0) for i in range(400)]
    result = validate("trades", frame("trades", rows), SESSION)
    check_invariant(result)
    assert result.rejected.height == 100
    assert rejected_share(result) == pytest.approx(0.25)
    assert result.reason_counts() == {"price > 0": 100}


def test_time_zone_naive_timestamps_raise_and_other_zones_become_utc() -> None:
    naive = frame("trades", [trade()]).with_columns(pl.col("ts").dt.replace_time_zone(None))
    with pytest.raises(ValueError, match=r"trades\.ts holds time-zone-naive timestamps.*replace_time_zone"):
        validate("trades", naive, SESSION)
    new_york = frame("trades", [trade()]).with_columns(pl.col("ts").dt.convert_time_zone("America/New_York"))
    result = validate("trades", new_york, SESSION)
    check_invariant(result)
    assert result.accepted["ts"].to_list() == [T0]


def test_text_timestamps_parse_or_quarantine_whatever_their_order() -> None:
    texts = ["2024-07-05 14:00:00", "2024-07-05T10:00:01-04:00", "2024-07-05T14:00:02.5Z", "garbage",
             "1720188003000000000"]
    rows = [trade(size=float(i)) for i in range(len(texts))]
    result = validate("trades", frame("trades", rows).with_columns(pl.Series("ts", texts)), SESSION)
    check_invariant(result)
    # 10:00:01 at -04:00 is 14:00:01 UTC; 1720188003 s after the epoch is 2024-07-05 14:00:03 UTC.
    assert result.accepted["ts"].to_list() == [T0 + timedelta(seconds=1), T0 + timedelta(seconds=2.5),
                                               T0 + timedelta(seconds=3)]
    # Without an offset the instant is ambiguous: the first value must not set the format for the others.
    assert [json.loads(p)["ts"] for p in result.rejected["payload"]] == ["2024-07-05 14:00:00", "garbage"]
    assert all(r.startswith("ts is not an ISO-8601 timestamp with a UTC offset") for r in result.rejected["reason"])


PANDERA_OFF = """
import sys
from datetime import date
import polars as pl
from pipeline.contract.calendar import trading_session
from pipeline.contract.schemas import RAW_COLUMNS
from pipeline.contract.validation import validate
session = trading_session(date(2024, 7, 5))
row = {"symbol": "SPY", "ts": session.open, "price": -1.0, "size": 1.0, "exchange": "P", "conditions": None,
       "source": "test", "trading_day": session.trading_day}
result = validate("trades", pl.DataFrame([row], schema=RAW_COLUMNS["trades"]), session)
print(result.rejected["reason"].to_list())
"""


def test_pandera_environment_variables_cannot_switch_the_checks_off() -> None:
    # pandera reads PANDERA_* when it is imported, so only a fresh interpreter shows what they do.
    env = os.environ | {"PANDERA_VALIDATION_ENABLED": "False", "PANDERA_VALIDATION_DEPTH": "SCHEMA_ONLY"}
    done = subprocess.run([sys.executable, "-c", PANDERA_OFF], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['price > 0']"


def test_a_global_pandera_switch_in_the_caller_does_not_skip_the_checks() -> None:
    with config_context(validation_enabled=False, validation_depth=ValidationDepth.SCHEMA_ONLY):
        result = validate("trades", frame("trades", [trade(price=0.0)]), SESSION)
    assert only_reason(result) == "price > 0"


def test_rows_after_an_early_close_are_quarantined() -> None:
    day = date(2024, 11, 29)
    session = trading_session(day)
    # The day after Thanksgiving closes at 13:00 New York time (EST, UTC-5): 18:00 UTC.
    close = datetime(2024, 11, 29, 13, tzinfo=ZoneInfo("America/New_York")).astimezone(UTC)
    assert close == datetime(2024, 11, 29, 18, tzinfo=UTC)
    times = [close - timedelta(minutes=1), close, close + timedelta(seconds=1), close + timedelta(hours=2)]
    trades = validate("trades", frame("trades", [trade(ts=t, trading_day=day) for t in times]), session)
    check_invariant(trades)
    assert trades.accepted["ts"].to_list() == times[:2]
    assert trades.rejected["reason"].to_list() == ["ts outside the session 14:30-18:00 UTC"] * 2
    # A bar starting at the close covers after-hours trading.
    bars = validate("bars", frame("bars", [bar(ts=t, trading_day=day) for t in times]), session)
    check_invariant(bars)
    assert bars.accepted["ts"].to_list() == times[:1]
    assert bars.rejected.height == 3


@pytest.mark.parametrize(
    ("table", "rows", "reasons"),
    [
        ("quotes", [quote(bid=0.0), quote(ts=T0 + timedelta(seconds=1), bid=-2.0, ask=-1.0)],
         ["bid > 0", "bid > 0; ask > 0"]),
        ("bars", [bar(open=0.0, low=0.0), bar(ts=T0 + timedelta(minutes=1), close=-1.0)],
         ["open > 0; low > 0", "close > 0; OHLC inconsistent: need low <= open, close <= high"]),
        ("option_snapshots", [option(bid=-0.1), option(ts=T0 + timedelta(seconds=1), bid=-0.3, ask=-0.2),
                              option(ts=T0 + timedelta(seconds=2), underlying_price=0.0),
                              option(ts=T0 + timedelta(seconds=3), underlying_price=-500.0)],
         ["bid >= 0", "bid >= 0; ask >= 0", "underlying_price > 0", "underlying_price > 0"]),
    ],
)
def test_prices_at_or_below_zero_beyond_trades(table: str, rows: list[dict], reasons: list[str]) -> None:
    clean = {"quotes": quote, "bars": bar, "option_snapshots": option}[table](ts=T0 + timedelta(minutes=30))
    result = validate(table, frame(table, [*rows, clean]), SESSION)
    check_invariant(result)
    assert result.rejected["reason"].to_list() == reasons
    assert result.accepted.rows(named=True) == [clean]


def test_only_a_reconstructed_row_may_lack_its_quote_and_it_must_say_why() -> None:
    why = "bid, ask: Alpaca keeps no historical option quotes"
    rows = [
        option(bid=None, ask=None),  # an observed chain without a quote: a broken feed
        option(ts=T0 + timedelta(seconds=1), ask=None),
        option(ts=T0 + timedelta(seconds=2), bid=None, ask=None, reconstructed=True),  # unexplained
        option(ts=T0 + timedelta(seconds=3), bid=None, ask=None, reconstructed=True, null_reason=why),
        option(ts=T0 + timedelta(seconds=4), reconstructed=None),  # a source that did not say: observed
    ]
    result = validate("option_snapshots", frame("option_snapshots", rows), SESSION)
    check_invariant(result)
    assert result.rejected["reason"].to_list() == [
        "bid or ask null on a row not marked reconstructed",
        "bid or ask null on a row not marked reconstructed",
        "reconstructed row without a null_reason",
    ]
    assert result.accepted["reconstructed"].to_list() == [True, False]
    assert result.accepted["null_reason"].to_list() == [why, None]


def test_option_rows_without_the_reconstruction_columns_are_observed() -> None:
    rows = [{k: v for k, v in option().items() if k not in ("reconstructed", "null_reason")}]
    result = validate("option_snapshots", pl.DataFrame(rows), SESSION)
    check_invariant(result)
    assert result.accepted["reconstructed"].to_list() == [False]


def test_option_bid_of_zero_is_a_valid_quote() -> None:
    result = validate("option_snapshots", frame("option_snapshots", [option(bid=0.0, last=0.0)]), SESSION)
    check_invariant(result)
    assert result.accepted.height == 1


@pytest.mark.parametrize(
    ("table", "first", "same_key", "other_key"),
    [
        ("quotes", quote(), quote(bid=499.0), quote(symbol="QQQ")),
        ("bars", bar(), bar(close=10.9), bar(interval="5m")),
        ("option_snapshots", option(), option(bid=4.0, underlying_price=501.0),
         option(contract="SPY240719P00500000", right="P", delta=-0.5)),
    ],
)
def test_duplicate_keys_beyond_trades_keep_the_first(table: str, first: dict, same_key: dict, other_key: dict) -> None:
    result = validate(table, frame(table, [first, same_key, other_key, same_key]), SESSION)
    check_invariant(result)
    assert result.rejected["reason"].to_list() == ["duplicate key"] * 2
    assert result.accepted.rows(named=True) == [first, other_key]
