"""Backtest metrics from daily net returns against empyrical, their stationary-bootstrap intervals (block
length, ensembles, seeds, coverage), the NULL reasons, the markdown table and the shared-y equity chart."""

from __future__ import annotations

import math
import re
from datetime import date, datetime, timedelta

import empyrical
import numpy as np
import polars as pl
import pytest

from pipeline.backtest.metrics import (
    METRICS,
    METRICS_SCHEMA,
    MIN_INTERVAL_DAYS,
    MIN_SHARE_DAYS,
    block_length,
    compute_metrics,
    daily_frame,
    mean_interval,
    metrics_table,
    share_interval,
)
from pipeline.backtest.reports import metrics_markdown
from pipeline.backtest.runner import RETURN_SCHEMA
from pipeline.training.curves import svg_line_chart

DAY0 = date(2024, 7, 1)


Bars = dict[tuple[int, str | None], list[tuple[float, float, float]]]


def _rows(bars: Bars, strategy: str = "s") -> pl.DataFrame:
    """backtest_returns rows: (ret, position, cost) per bar, one list per (day offset, model_id)."""
    rows = []
    for (day, member), unit in bars.items():
        d = DAY0 + timedelta(days=day)
        for i, (ret, position, cost) in enumerate(unit):
            ts = datetime(d.year, d.month, d.day, 14, 0) + timedelta(minutes=i)
            rows.append((d, ts, strategy, member, ret, position, cost))
    frame = pl.DataFrame(rows, schema=list(RETURN_SCHEMA), orient="row")
    return frame.with_columns(pl.col("ts").dt.replace_time_zone("UTC")).cast(RETURN_SCHEMA)


def _random_rows(days: int, members: int, strategy: str = "s", bars: int = 5, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    return _rows({(d, f"m{m}"): [(float(r), 0.0, 0.0) for r in 3e-4 + 2e-3 * rng.standard_normal(bars)]
                  for d in range(days) for m in range(members)}, strategy)


def _row(table: pl.DataFrame, metric: str, strategy: str = "s") -> dict:
    return table.filter((pl.col("metric") == metric) & (pl.col("strategy") == strategy)).row(0, named=True)


def test_daily_metrics_match_empyrical() -> None:
    rows = pl.concat([_random_rows(30, 1, "solo", seed=1), _random_rows(30, 2, "pair", seed=2)])
    daily = daily_frame(rows)
    assert daily.columns == ["strategy", "trading_day", "ret", "turnover", "cost"]
    assert daily.group_by("strategy").len().sort("strategy")["len"].to_list() == [30, 30]
    # A day of "pair" is the mean of its two members' compounded day returns.
    first = rows.filter((pl.col("strategy") == "pair") & (pl.col("trading_day") == DAY0))
    members = [np.prod(1 + g["ret"].to_numpy()) - 1 for _, g in first.group_by("model_id")]
    assert daily.filter(pl.col("strategy") == "pair")["ret"][0] == pytest.approx(np.mean(members), rel=1e-12)
    for strategy in ("solo", "pair"):
        r = daily.filter(pl.col("strategy") == strategy)["ret"].to_numpy()
        got = compute_metrics(rows.filter(pl.col("strategy") == strategy))
        assert set(got) == set(METRICS)
        expected = {
            "sharpe": empyrical.sharpe_ratio(r, period="daily"),
            "sortino": empyrical.sortino_ratio(r, period="daily"),
            "annualized_volatility": empyrical.annual_volatility(r, period="daily"),
            "annualized_return": empyrical.annual_return(r, period="daily"),
            "max_drawdown": -empyrical.max_drawdown(r),
            "total_return": empyrical.cum_returns_final(r),
        }
        for name, value in expected.items():
            assert got[name] == pytest.approx(value, rel=1e-10), (strategy, name)
        assert got["calmar"] == pytest.approx(empyrical.calmar_ratio(r, period="daily"), rel=1e-10)
        assert got["win_rate"] == pytest.approx((r > 0).mean())
        assert got["profit_factor"] == pytest.approx(r[r > 0].sum() / -r[r < 0].sum())


def test_block_length_grows_with_autocorrelation() -> None:
    rng = np.random.default_rng(0)
    noise = rng.standard_normal(500)
    lengths = []
    for phi in (0.0, 0.5, 0.9):
        series = np.zeros(500)
        for t in range(1, 500):
            series[t] = phi * series[t - 1] + noise[t]
        lengths.append(block_length(series))
    assert lengths[0] < lengths[1] < lengths[2], lengths
    assert block_length(np.full(40, 0.01)) == 1 and block_length(noise[:2]) == 1


def test_ensemble_members_resample_days_not_members() -> None:
    rng = np.random.default_rng(3)
    bars = {(d, f"m{m}"): [(float(r), 0.0, 0.0) for r in 5e-4 + 2e-3 * rng.standard_normal(6)]
            for d in range(30) for m in range(3)}
    members = _rows(bars)
    book = daily_frame(members)["ret"].to_list()  # the members' equal-weight book, one number a day
    single = _rows({(d, "book"): [(r, 0.0, 0.0)] for d, r in enumerate(book)})
    widths = {}
    for name, rows in (("members", members), ("single", single)):
        total = _row(metrics_table(rows, window="w", trading_day=DAY0, n_boot=1000), "total_return")
        assert total["ci_low"] < total["value"] < total["ci_high"]
        widths[name] = total["ci_high"] - total["ci_low"]
    assert widths["members"] == pytest.approx(widths["single"], rel=1e-9)
    assert widths["members"] > 0.02  # daily sd ~0.5%: a 30-day total spreads by percents, not 2e-5


def test_undefined_values_are_null_with_a_reason() -> None:
    one = metrics_table(_random_rows(1, 1), window="w", trading_day=DAY0)
    for metric in ("sharpe", "sortino", "annualized_volatility", "annualized_return", "calmar"):
        row = _row(one, metric)
        assert row["value"] is None and row["ci_low"] is None and "1 trading day" in row["note"], row
    assert _row(one, "sharpe")["note"] == "1 trading day: a daily Sharpe needs 2"
    total = _row(one, "total_return")
    assert total["value"] is not None and total["ci_low"] is None
    assert total["note"] == "1 trading day: too few to bootstrap an interval (needs 10)"

    five = metrics_table(_random_rows(5, 1), window="w", trading_day=DAY0)
    sharpe = _row(five, "sharpe")
    assert sharpe["value"] is not None and sharpe["ci_low"] is None and sharpe["ci_high"] is None
    assert sharpe["note"] == ("5 trading days: too few to bootstrap an interval (needs 10); annualized from so few "
                              "days, the figure is mostly noise")

    fifteen = metrics_table(_random_rows(15, 1), window="w", trading_day=DAY0)
    assert _row(fifteen, "annualized_return")["value"] is None
    assert _row(fifteen, "annualized_return")["note"] == "15 trading days: annualizing needs 20"
    sharpe = _row(fifteen, "sharpe")
    assert sharpe["ci_low"] <= sharpe["value"] <= sharpe["ci_high"] and sharpe["note"] is None

    gains = metrics_table(_rows({(d, None): [(0.001 * (d + 1), 0.0, 0.0)] for d in range(12)}),
                          window="w", trading_day=DAY0)
    assert _row(gains, "sortino")["note"] == "no losing day: the downside deviation is 0"
    assert _row(gains, "profit_factor")["value"] is None and _row(gains, "max_drawdown")["value"] == 0
    flat = compute_metrics(_rows({(d, None): [(0.001, 0.0, 0.0)] for d in range(25)}))
    assert math.isnan(flat["sharpe"]) and math.isnan(flat["calmar"]) and flat["annualized_volatility"] == 0

    for table in (one, five, fifteen, gains):
        assert table.columns == list(METRICS_SCHEMA) and table.height == len(METRICS)
        # A NULL value or interval always says why; a full row says nothing.
        nulls = table.filter(pl.col("value").is_null() | pl.col("ci_low").is_null())
        assert nulls["note"].null_count() == 0
        assert table.filter(pl.col("note").is_null())["ci_low"].null_count() == 0
        assert np.isfinite(table.drop_nulls("value")["value"].to_numpy()).all()


def test_intervals_repeat_with_the_seed() -> None:
    rows = pl.concat([_random_rows(25, 2, "a", seed=4), _random_rows(25, 1, "b", seed=5)])
    first = metrics_table(rows, window="w", trading_day=DAY0, n_boot=300, seed=7)
    assert first.equals(metrics_table(rows, window="w", trading_day=DAY0, n_boot=300, seed=7))
    other = metrics_table(rows, window="w", trading_day=DAY0, n_boot=300, seed=8)
    assert first["value"].equals(other["value"])
    assert not first["ci_low"].equals(other["ci_low"])


def test_mean_interval_covers_the_true_mean() -> None:
    rng = np.random.default_rng(11)
    true_mean, trials = 5e-4, 200
    covered = 0
    for seed in range(trials):
        interval = mean_interval(true_mean + 1e-2 * rng.standard_normal(40), n_boot=500, level=0.9, seed=seed)
        assert interval.days == 40 and interval.ci_low < interval.mean < interval.ci_high
        covered += interval.ci_low <= true_mean <= interval.ci_high
    coverage = covered / trials
    print(f"90% stationary-bootstrap interval of the mean covered the true mean in {coverage:.1%} "
          f"of {trials} series")
    assert 0.80 <= coverage <= 0.97
    short = mean_interval(np.arange(MIN_INTERVAL_DAYS - 1.0), n_boot=100, level=0.9, seed=0)
    assert short.mean == pytest.approx(4.0) and math.isnan(short.ci_low) and math.isnan(short.ci_high)


def test_turnover_and_costs_per_day_and_member() -> None:
    rows = _rows({
        (0, "a"): [(0.01, 0.5, 0.001), (0.0, 1.0, 0.0), (-0.02, 0.0, 0.002)],  # |0.5| + |0.5| + |-1| = 2
        (0, "b"): [(0.0, 1.0, 0.004), (0.0, 1.0, 0.0), (0.0, 1.0, 0.0)],  # enters once: 1
        (1, "a"): [(0.01, -1.0, 0.001), (0.01, -1.0, 0.0)],  # starts flat again: 1
    })
    daily = daily_frame(rows)
    assert daily["turnover"].to_list() == pytest.approx([(2 + 1) / 2, 1.0])
    assert daily["cost"].to_list() == pytest.approx([(0.003 + 0.004) / 2, 0.001])
    assert daily["ret"].to_list() == pytest.approx([(1.01 * 0.98 - 1) / 2, 1.01**2 - 1])
    got = compute_metrics(rows)
    assert got["turnover"] == pytest.approx(2.5) and got["costs_paid"] == pytest.approx(0.0045)


def test_markdown_shows_null_values_and_intervals() -> None:
    table = metrics_table(pl.concat([_random_rows(1, 1, "one"), _random_rows(30, 1, "many")]),
                          window="w", trading_day=DAY0, n_boot=200)
    cells = [line.split(" | ") for line in metrics_markdown(table).splitlines()]
    lines = {row[0].strip("| "): row[1:] for row in cells}
    sharpe_column = 1  # SHOWN = total_return, sharpe, ...
    assert lines["one"][sharpe_column] == "—"
    assert "[" not in lines["one"][0] and lines["one"][0] != "—"  # a value without an interval
    assert re.fullmatch(r"\S+ \[\S+, \S+\]", lines["many"][sharpe_column])


def _polylines(svg: str) -> list[str]:
    return re.findall(r'<polyline[^>]*points="([^"]*)"', svg)


def test_line_chart_can_share_one_y_scale() -> None:
    series = {"low": [(0, 0.0), (1, 1.0)], "high": [(0, 10.0), (1, 11.0)]}
    own = _polylines(svg_line_chart(series, "t", "x"))
    assert own[0] == own[1]  # each series fills the plot on its own scale
    shared_svg = svg_line_chart(series, "t", "x", shared_y=True)
    low, high = ([float(p.split(",")[1]) for p in line.split()] for line in _polylines(shared_svg))
    assert max(high) < min(low)  # the higher series is drawn above (smaller SVG y) on the common scale
    assert ">11<" in shared_svg and ">0<" in shared_svg  # the shared axis is labelled


def test_the_share_of_a_reference_and_its_interval() -> None:
    rng = np.random.default_rng(4)
    oracle = 0.02 + 0.005 * rng.standard_normal(30)
    model = 0.8 * oracle + 0.002 * rng.standard_normal(30)
    share = share_interval(model, oracle, n_boot=500, level=0.9, seed=0)
    assert share.mean == pytest.approx(model.mean() / oracle.mean())
    assert share.ci_low < share.mean < share.ci_high and 0.7 < share.ci_low and share.ci_high < 0.9
    # Fewer than MIN_SHARE_DAYS days: the share, no interval; a reference that loses: no share at all.
    short = share_interval(model[:MIN_SHARE_DAYS - 1], oracle[:MIN_SHARE_DAYS - 1], n_boot=100, level=0.9, seed=0)
    assert np.isfinite(short.mean) and np.isnan(short.ci_low) and np.isnan(short.ci_high)
    assert np.isnan(share_interval(model, -oracle, n_boot=100, level=0.9, seed=0).mean)
