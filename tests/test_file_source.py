"""FileSource: landed CSV/Parquet files parsed non-strictly into one trading day of a raw table."""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl
import pytest

from pipeline.contract.calendar import TradingSession, trading_session
from pipeline.contract.schemas import RAW_COLUMNS
from pipeline.contract.validation import validate
from pipeline.sources import file_source
from pipeline.sources.base import MarketSource, SourceError
from pipeline.sources.file_source import FileSource, landing_partitions

DAY = date(2024, 7, 5)
SESSION = TradingSession(DAY, datetime(2024, 7, 5, 13, 30, tzinfo=UTC), datetime(2024, 7, 5, 20, 0, tzinfo=UTC))


def _land(root: Path, table: str, name: str, content: str | bytes) -> Path:
    path = root / table / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        path.write_text(content)
    else:
        path.write_bytes(content)
    return path


TRADES_CSV = """symbol,ts,price,size,exchange,conditions
AAPL,2024-07-05T09:30:00-04:00,100.5,10,Q,@
AAPL,2024-07-05 13:31:00.25Z,abc,10,Q,
MSFT,1720186260000000000,200,5,,
AAPL,2024-07-05T19:59:59+00:00,101,3,N,F
AAPL,2024-07-08T09:30:00-04:00,102,10,Q,@
AAPL,2024-07-05T00:30:00+00:00,99,1,Q,
"""


def test_trades_csv_rows_of_the_trading_day_with_utc_ts(tmp_path: Path) -> None:
    _land(tmp_path, "trades", "t.csv", TRADES_CSV)
    source = FileSource(tmp_path)
    assert isinstance(source, MarketSource)
    frame = source.fetch("trades", SESSION, [])
    assert frame.columns == [*RAW_COLUMNS["trades"], "_parse_error"]
    assert frame.schema["ts"] == pl.Datetime("us", "UTC")
    # 2024-07-05T00:30Z is 2024-07-04 in New York (filed under 07-03), and the 07-08 row is another day: both
    # excluded.
    assert frame.height == 4
    assert frame["ts"].to_list() == [
        datetime(2024, 7, 5, 13, 30, tzinfo=UTC),
        datetime(2024, 7, 5, 13, 31, 0, 250000, tzinfo=UTC),
        datetime(2024, 7, 5, 13, 31, tzinfo=UTC),
        datetime(2024, 7, 5, 19, 59, 59, tzinfo=UTC),
    ]
    assert set(frame["source"]) == {"files"}
    assert set(frame["trading_day"]) == {DAY}
    assert frame["price"].to_list() == [100.5, None, 200.0, 101.0]
    assert frame["_parse_error"].to_list() == [None, "bad value for column price: 'abc'", None, None]


def test_bad_ts_row_is_kept_with_reason_on_the_files_first_day(tmp_path: Path) -> None:
    csv = "symbol,ts,bid,ask,bid_size,ask_size\nSPY,2024-07-05T09:30:00-04:00,1,2,3,4\nSPY,yesterday,1,2,x,4\n"
    _land(tmp_path, "quotes", "q.csv", csv)
    frame = FileSource(tmp_path).fetch("quotes", SESSION, ["SPY"])
    assert frame.height == 2
    bad = frame.filter(pl.col("_parse_error").is_not_null())
    assert bad["ts"].to_list() == [None]
    assert bad["bid_size"].to_list() == [None]
    assert bad["_parse_error"][0] == "bad value for column ts: 'yesterday'; bad value for column bid_size: 'x'"


def test_file_where_no_ts_parses_raises_instead_of_losing_its_rows(tmp_path: Path) -> None:
    csv = "symbol,ts,bid,ask,bid_size,ask_size\nSPY,yesterday,1,2,3,4\nSPY,today,1,2,3,4\n"
    path = _land(tmp_path, "quotes", "q.csv", csv)
    with pytest.raises(SourceError) as err:
        FileSource(tmp_path).fetch("quotes", SESSION, ["SPY"])
    assert str(path) in str(err.value) and "'yesterday'" in str(err.value) and "ISO-8601" in str(err.value)


def test_naive_timestamp_is_a_parse_error(tmp_path: Path) -> None:
    csv = "symbol,ts,bid,ask,bid_size,ask_size\nSPY,2024-07-05T09:30:00-04:00,1,2,3,4\nSPY,2024-07-05T09:31:00,1,2,3,4\n"
    _land(tmp_path, "quotes", "q.csv", csv)
    frame = FileSource(tmp_path).fetch("quotes", SESSION, [])
    assert frame["_parse_error"].to_list() == [None, "bad value for column ts: '2024-07-05T09:31:00'"]


def test_symbol_filter_uses_underlying_for_options_and_parses_expiry(tmp_path: Path) -> None:
    csv = (
        "underlying,underlying_price,contract,expiry,strike,right,ts,bid,ask,last,volume,open_interest,iv\n"
        "SPY,550,SPY240719C00550000,2024-07-19,550,C,2024-07-05T15:00:00Z,5.1,5.3,5.2,10,100,0.14\n"
        "QQQ,480,QQQ240719P00480000,19/07/2024,480,P,2024-07-05T15:00:00Z,4.1,4.3,,0,50,0.2\n"
    )
    _land(tmp_path, "option_snapshots", "o.csv", csv)
    source = FileSource(tmp_path)
    spy = source.fetch("option_snapshots", SESSION, ["SPY"])
    assert spy["contract"].to_list() == ["SPY240719C00550000"]
    assert spy["expiry"].to_list() == [date(2024, 7, 19)]
    assert spy["delta"].to_list() == [None]  # optional greeks may be absent from the file
    qqq = source.fetch("option_snapshots", SESSION, ["QQQ"])
    assert qqq["_parse_error"].to_list() == ["bad value for column expiry: '19/07/2024'"]
    assert qqq["last"].to_list() == [None]


def test_daily_bar_with_date_only_ts_belongs_to_that_day(tmp_path: Path) -> None:
    csv = (
        "symbol,ts,interval,open,high,low,close,volume\n"
        "SPY,2024-07-05,,1,2,0.5,1.5,100\n"
        "SPY,2024-07-05,1d,1,2,0.5,1.5,100\n"
        "SPY,2024-07-05,1m,1,2,0.5,1.5,100\n"
        "SPY,2024-07-05T09:30:00-04:00,5m,1,2,0.5,1.5,100\n"
        "SPY,2024-07-05T10:00:00-04:00,1h,1,2,0.5,1.5,100\n"
        "SPY,2024-07-08,1d,1,2,0.5,1.5,100\n"
    )
    _land(tmp_path, "bars", "b.csv", csv)
    frame = FileSource(tmp_path).fetch("bars", SESSION, ["SPY"])
    assert frame["interval"].to_list() == ["1d", "1d", "1m", "5m", "1h"]
    assert set(frame["trading_day"]) == {DAY}
    errors = frame["_parse_error"].to_list()
    assert errors[:2] == [None, None] and errors[3:] == [None, None]
    assert "a date-only ts is a daily bar" in errors[2]


def test_daily_bars_stamped_at_midnight_utc_belong_to_their_utc_date(tmp_path: Path) -> None:
    """Midnight UTC is the evening before in New York: filed by its New York date, Monday's bar would be lost
    (Sunday is no session) and Tuesday's row would carry Wednesday's close."""
    csv = "symbol,ts,interval,open,high,low,close,volume\n" + "".join(
        f"SPY,2024-07-0{d}T00:00:00Z,1d,{c},{c + 1},{c - 1},{c},10\n" for d, c in ((1, 100), (2, 110), (3, 120))
    )
    _land(tmp_path, "bars", "b.csv", csv)
    source = FileSource(tmp_path)
    closes = {d: source.fetch("bars", trading_session(date(2024, 7, d)), []) for d in (1, 2, 3)}
    assert {d: f["close"].to_list() for d, f in closes.items()} == {1: [100.0], 2: [110.0], 3: [120.0]}
    result = validate("bars", closes[2], trading_session(date(2024, 7, 2)))
    assert result.accepted["close"].to_list() == [110.0] and result.rejected.is_empty()
    assert landing_partitions(tmp_path)["bars"] == {date(2024, 7, d) for d in (1, 2, 3)}  # what the sensor asks for


def test_parquet_with_native_types(tmp_path: Path) -> None:
    frame = pl.DataFrame(
        {
            "symbol": ["AAPL", "AAPL"],
            "ts": [datetime(2024, 7, 5, 14, 0, tzinfo=UTC), datetime(2024, 7, 6, 14, 0, tzinfo=UTC)],
            "price": [100, 101],
            "size": [1.0, 2.0],
            "exchange": ["Q", "Q"],
            "conditions": ["@", None],
        }
    ).with_columns(pl.col("ts").dt.convert_time_zone("America/New_York"))
    (tmp_path / "trades").mkdir()
    frame.write_parquet(tmp_path / "trades" / "t.parquet")
    # Epoch nanoseconds as int64, and a 0-byte file beside them (skipped, not fatal).
    epoch = frame.with_columns(pl.col("ts").dt.epoch("ns"), pl.lit("MSFT").alias("symbol"))
    epoch.write_parquet(tmp_path / "trades" / "epoch.parquet")
    _land(tmp_path, "trades", "empty.parquet", b"")
    out = FileSource(tmp_path).fetch("trades", SESSION, ["AAPL", "MSFT"])
    # Files in name order (epoch.parquet, t.parquet); each one's Saturday row is Friday's to quarantine.
    assert out["symbol"].to_list() == ["MSFT", "MSFT", "AAPL", "AAPL"]
    assert out["ts"].to_list() == [datetime(2024, 7, 5, 14, 0, tzinfo=UTC), datetime(2024, 7, 6, 14, 0, tzinfo=UTC)] * 2
    assert out["price"].to_list() == [100.0, 101.0] * 2
    assert out["_parse_error"].to_list() == [None, "2024-07-06 is not an XNYS trading day"] * 2


def test_missing_required_columns_name_file_and_columns(tmp_path: Path) -> None:
    path = _land(tmp_path, "quotes", "q.csv", "symbol,ts,bid\nSPY,2024-07-05T09:30:00-04:00,1\n")
    with pytest.raises(SourceError) as err:
        FileSource(tmp_path).fetch("quotes", SESSION, [])
    assert str(path) in str(err.value)
    assert "['ask', 'bid_size', 'ask_size']" in str(err.value)


@pytest.mark.parametrize("content", [b"", b"symbol,ts,bid,ask,bid_size,ask_size\n"], ids=["0-bytes", "header-only"])
def test_empty_file_gives_no_rows_and_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture, content: bytes) -> None:
    path = _land(tmp_path, "quotes", "empty.csv", content)
    with caplog.at_level(logging.WARNING, logger="pipeline.sources.file_source"):
        frame = FileSource(tmp_path).fetch("quotes", SESSION, [])
    assert frame.height == 0
    assert frame.columns == [*RAW_COLUMNS["quotes"], "_parse_error"]
    assert any(str(path) in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


@pytest.mark.parametrize(
    ("name", "content"),
    [("bad.parquet", b"PAR1 this is not a parquet footer PAR1"), ("bad.csv", bytes(range(256)) * 8)],
    ids=["corrupt-parquet", "binary-csv"],
)
def test_unreadable_file_raises_source_error_naming_it(tmp_path: Path, name: str, content: bytes) -> None:
    path = _land(tmp_path, "trades", name, content)
    with pytest.raises(SourceError) as err:
        FileSource(tmp_path).fetch("trades", SESSION, [])
    assert str(path) in str(err.value)
    assert "could not read" in str(err.value)


def test_landing_files_and_partitions(tmp_path: Path) -> None:
    _land(tmp_path, "trades", "t.csv", TRADES_CSV)
    _land(tmp_path, "trades", "notes.txt", "ignored")
    # Only ts is read: a garbage value elsewhere does not matter, and epoch ns counts.
    _land(tmp_path, "quotes", "q.csv", "symbol,ts,bid\nSPY,1720450200000000000,zzz\n")
    _land(tmp_path, "bars", "b.csv", "symbol,ts,interval\nSPY,2024-07-09,1d\n")
    _land(tmp_path, "option_snapshots", "o.parquet", b"garbage")
    source = FileSource(tmp_path)
    assert [p.name for p in source.landing_files("trades")] == ["t.csv"]
    assert landing_partitions(tmp_path) == {
        "trades": {date(2024, 7, 3), DAY, date(2024, 7, 8)},  # the July 4th row is the 3rd's ingest's to quarantine
        "quotes": {date(2024, 7, 8)},
        "bars": {date(2024, 7, 9)},
        "option_snapshots": set(),
    }


def test_unknown_table_says_which_exist(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="option_snapshots"):
        FileSource(tmp_path).fetch("ticks", SESSION, [])


def test_backfill_parses_each_landed_file_once_and_rereads_it_when_it_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _land(tmp_path, "trades", "t.csv", TRADES_CSV)
    reads: list[Path] = []
    real_read = file_source._read

    def counting_read(landed: Path, columns: list[str] | None = None) -> pl.DataFrame:
        reads.append(landed)
        return real_read(landed, columns)

    monkeypatch.setattr(file_source, "_read", counting_read)
    source = FileSource(tmp_path)
    next_day = TradingSession(
        date(2024, 7, 8), datetime(2024, 7, 8, 13, 30, tzinfo=UTC), datetime(2024, 7, 8, 20, 0, tzinfo=UTC)
    )
    assert source.fetch("trades", SESSION, []).height == 4
    assert source.fetch("trades", next_day, [])["price"].to_list() == [102.0]
    assert reads == [path]

    path.write_text(TRADES_CSV.replace("102,10", "103,10,Q,@\nAAPL,2024-07-08T09:31:00-04:00,104,10"))
    assert source.fetch("trades", next_day, [])["price"].to_list() == [103.0, 104.0]
    assert reads == [path, path]


def test_a_day_folder_is_read_for_its_day_only_and_loses_no_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    header = "symbol,ts,price,size,exchange,conditions\n"
    _land(tmp_path, "trades", "2024-07-05/a.csv", header + "SPY,2024-07-05T13:31:00Z,540.1,100,XNYS,\n"
          # filed under the wrong day: not dropped, quarantined with the reason
          + "SPY,2024-07-08T13:31:00Z,541.0,100,XNYS,\n")
    _land(tmp_path, "trades", "2024-07-08/b.csv", header + "SPY,2024-07-08T13:32:00Z,541.2,100,XNYS,\n")
    _land(tmp_path, "trades", "top.csv", header + "SPY,2024-07-05T13:33:00Z,540.3,100,XNYS,\n")
    read: list[str] = []
    original = FileSource.read_file
    monkeypatch.setattr(FileSource, "read_file", lambda self, t, p: read.append(p.name) or original(self, t, p))
    source = FileSource(tmp_path)
    rows = source.fetch("trades", SESSION, [])
    assert sorted(read) == ["a.csv", "top.csv"]  # the 07-08 folder was not opened for 07-05
    result = validate("trades", rows, SESSION)
    assert result.rows_read == 3 and result.rows_accepted == 2
    assert "trading_day is not 2024-07-05" in result.rejected["reason"][0]
    # The folder names the day: listing partitions reads none of its files.
    assert landing_partitions(tmp_path)["trades"] == {DAY, date(2024, 7, 8)}


def test_rows_dated_without_a_session_are_quarantined_by_the_session_before(tmp_path: Path) -> None:
    header = "symbol,ts,price,size,exchange,conditions\n"
    _land(tmp_path, "trades", "week.csv", header + "SPY,2024-07-05T13:31:00Z,540.1,100,XNYS,\n"
          + "SPY,2024-07-05T13:32:00Z,540.2,100,XNYS,\n"
          + "SPY,2024-07-06T13:31:00Z,541.0,100,XNYS,\n")  # a Saturday
    # A Sunday folder: its rows are quarantined whatever their ts says (this one's is Friday's).
    _land(tmp_path, "trades", "2024-07-07/sunday.csv", header + "SPY,2024-07-05T13:33:00Z,540.3,100,XNYS,\n")
    source = FileSource(tmp_path)
    result = validate("trades", source.fetch("trades", SESSION, []), SESSION)
    assert (result.rows_read, result.rows_accepted, result.rows_rejected) == (4, 2, 2)
    reasons = result.rejected["reason"].to_list()
    assert reasons[0].startswith("2024-07-06 is not an XNYS trading day")
    assert reasons[1].startswith("in day folder 2024-07-07 is not an XNYS trading day")
    assert result.rejected["trading_day"].to_list() == [DAY, DAY]
    # Read by Friday's ingest only: Monday's neither takes nor quarantines them again.
    assert source.fetch("trades", trading_session(date(2024, 7, 8)), []).height == 0
    assert landing_partitions(tmp_path)["trades"] == {DAY}
