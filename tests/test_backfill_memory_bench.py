"""Smoke run of benchmarks/backfill_memory.py: one tiny range in a child process reports its rows and peak RSS, and
the dense symbol trades about as often as asked."""

from __future__ import annotations

from datetime import date

from conftest import load_script

from pipeline.contract.calendar import trading_session

TICKS_PER_DAY = 3000


def test_the_benchmark_reports_a_tiny_backfill() -> None:
    bench = load_script("benchmarks/backfill_memory.py")
    report = bench.main(["--days", "1", "--ticks-per-day", str(TICKS_PER_DAY), "--symbols", "",
                         "--snapshot-minutes", "195"])
    (run,) = report["runs"]
    assert report["symbols"] == ["SPY"] and run["days"] == 1 and report["peak_rss_mb_per_extra_day"] is None
    rows = run["rows"]
    assert all(rows[table] > 0 for table in bench.TABLES), rows
    minutes = trading_session(date.fromisoformat(run["last_day"])).minutes
    assert rows["features.bars_1m"] == rows["features.market"] == minutes  # one symbol, every minute
    assert rows["raw.quotes"] == 2 * rows["raw.trades"]  # the synthetic market quotes twice per trade
    # Random trade arrivals: within a third of the asked count on one day.
    assert abs(rows["raw.trades"] - TICKS_PER_DAY) < TICKS_PER_DAY / 3
    assert run["rows_written"] == sum(rows.values()) and run["rows_per_s"] > 0
    assert run["peak_rss_mb"] >= run["rss_before_run_mb"] > 0


def test_the_slope_is_peak_growth_per_extra_day() -> None:
    bench = load_script("benchmarks/backfill_memory.py")
    runs = [{"days": 5, "peak_rss_mb": 700}, {"days": 60, "peak_rss_mb": 810}]
    assert bench.peak_growth_per_day(runs) == 2.0
    assert bench.peak_growth_per_day(runs[:1]) is None
