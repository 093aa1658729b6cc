"""Backtest metrics against hand-computed values, their bootstrap intervals, and the shared-y equity chart."""

from __future__ import annotations

import math
import re
from datetime import date, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from pipeline.backtest.metrics import METRICS, compute_metrics, metrics_table, paired_difference_ci
from pipeline.backtest.runner import RETURN_SCHEMA
from pipeline.training.curves import svg_line_chart

DAY0 = date(2024, 7, 1)


def _rows(ret_by_unit: dict[tuple[int, str | None], list[float]], position: list[float] | None = None,
          cost: list[float] | None = None, strategy: str = "s") -> pl.DataFrame:
    """backtest_returns rows: one list of bar returns per (day offset, model_id)."""
    rows = []
    for (day, member), rets in ret_by_unit.items():
        d = DAY0 + timedelta(days=day)
        for i, r in enumerate(rets):
            ts = datetime(d.year, d.month, d.day, 14, 0) + timedelta(minutes=i)
            rows.append((d, ts, strategy, member, r, position[i] if position else 0.0, cost[i] if cost else 0.0))
    frame = pl.DataFrame(rows, schema=list(RETURN_SCHEMA), orient="row")
    return frame.with_columns(pl.col("ts").dt.replace_time_zone("UTC")).cast(RETURN_SCHEMA)


def test_each_metric_against_a_hand_computed_value() -> None:
    rets = [0.01, -0.02, 0.03, 0.0]
    got = compute_metrics(_rows({(0, None): rets}, position=[0, 1, 1, 0], cost=[0, 0.001, 0, 0.001]))
    ppy = 4 * 252  # 4 bars in 1 day, measured from the data
    total = 1.01 * 0.98 * 1.03 - 1
    std = math.sqrt(((0.005) ** 2 + 0.025**2 + 0.025**2 + 0.005**2) / 3)  # mean 0.005, ddof 1
    annual = (1 + total) ** (ppy / 4) - 1
    expected = {
        "total_return": total,
        "annualized_return": annual,
        "annualized_volatility": std * math.sqrt(ppy),
        "sharpe": 0.005 / std * math.sqrt(ppy),
        "sortino": 0.005 / math.sqrt(0.02**2 / 4) * math.sqrt(ppy),
        "max_drawdown": 0.02,  # from the peak 1.01 down to 1.01 * 0.98
        "calmar": annual / 0.02,
        "win_rate": 1.0,
        "profit_factor": 0.04 / 0.02,
        "turnover": 2.0,
        "costs_paid": 0.002,
    }
    assert set(got) == set(METRICS)
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, rel=1e-9), name
    assert compute_metrics(_rows({(0, None): rets}), periods_per_year=252)["annualized_return"] == pytest.approx(
        (1 + total) ** (252 / 4) - 1
    )


def test_members_are_averaged_per_bar_and_win_rate_counts_units() -> None:
    units = {(0, "m1"): [0.02, -0.01], (0, "m2"): [0.0, -0.03], (1, "m1"): [0.01, 0.01], (1, "m2"): [-0.01, 0.0]}
    got = compute_metrics(_rows(units))
    average = [0.01, -0.02, 0.0, 0.005]  # day 0 then day 1, per bar mean of the two members
    assert got["total_return"] == pytest.approx(np.prod(1 + np.array(average)) - 1)
    assert got["win_rate"] == pytest.approx(2 / 4)  # units m1/day0 and m1/day1 gained


def test_undefined_ratios_are_documented_values_not_errors() -> None:
    flat = compute_metrics(_rows({(0, None): [0.0] * 5}))
    assert flat["sharpe"] == 0 and flat["sortino"] == 0 and flat["calmar"] == 0 and flat["max_drawdown"] == 0
    assert math.isnan(flat["profit_factor"])
    gains = compute_metrics(_rows({(0, None): [0.01, 0.02, 0.01]}))
    assert math.isnan(gains["profit_factor"]) and math.isnan(gains["sortino"]) and math.isnan(gains["calmar"])
    table = metrics_table(_rows({(0, None): [0.01, 0.02, 0.01]}), window="1d", trading_day=DAY0, n_boot=50)
    assert table.filter(pl.col("metric") == "profit_factor")["value"].null_count() == 1
    values = table.drop_nulls("value")["value"].to_numpy()
    assert np.isfinite(values).all()


def _iid_days(days: int, members: int = 1, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    return _rows({(d, f"m{m}"): list(2e-4 + 1e-3 * rng.standard_normal(60)) for d in range(days)
                  for m in range(members)})


def test_intervals_contain_the_estimate_shrink_with_units_and_repeat() -> None:
    widths = {}
    for days in (4, 40):
        table = metrics_table(_iid_days(days), window="w", trading_day=DAY0, n_boot=400)
        assert table.height == len(METRICS)
        assert table.columns == ["trading_day", "window", "strategy", "metric", "value", "ci_low", "ci_high"]
        for name in ("total_return", "sharpe", "annualized_volatility", "costs_paid"):
            row = table.filter(pl.col("metric") == name).row(0, named=True)
            assert row["ci_low"] <= row["value"] <= row["ci_high"], (days, name)
        sharpe = table.filter(pl.col("metric") == "sharpe").row(0, named=True)
        widths[days] = sharpe["ci_high"] - sharpe["ci_low"]
    assert widths[40] < 0.6 * widths[4]
    again = metrics_table(_iid_days(40), window="w", trading_day=DAY0, n_boot=400)
    assert again.equals(metrics_table(_iid_days(40), window="w", trading_day=DAY0, n_boot=400))
    assert not again.equals(metrics_table(_iid_days(40), window="w", trading_day=DAY0, n_boot=400, seed=1))


def test_members_and_a_single_unit_get_intervals_too() -> None:
    members = metrics_table(_iid_days(1, members=6), window="w", trading_day=DAY0, n_boot=300)
    single = metrics_table(_iid_days(1), window="w", trading_day=DAY0, n_boot=300)  # moving-block bootstrap
    for table in (members, single):
        row = table.filter(pl.col("metric") == "total_return").row(0, named=True)
        assert row["ci_low"] < row["value"] < row["ci_high"]


def test_paired_difference_finds_a_planted_edge_and_not_a_null_one() -> None:
    rng = np.random.default_rng(0)
    b = rng.standard_normal(200)
    mean, lo, hi = paired_difference_ci(b + 0.5 + rng.standard_normal(200), b)
    assert lo > 0 and lo < mean < hi
    mean, lo, hi = paired_difference_ci(rng.standard_normal(200), rng.standard_normal(200))
    assert lo < 0 < hi and lo < mean < hi
    assert paired_difference_ci(np.ones(5), np.ones(5)) == (0.0, 0.0, 0.0)


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


def test_a_trailing_window_with_a_new_model_every_day_keeps_every_day_in_the_bootstrap() -> None:
    rng = np.random.default_rng(2)
    rows = _rows({(d, f"model-of-day-{d}"): list(1e-3 * rng.standard_normal(30)) for d in range(8)})
    table = metrics_table(rows, window="trailing", trading_day=DAY0, n_boot=200)
    total = table.filter(pl.col("metric") == "total_return").row(0, named=True)
    assert total["ci_low"] < total["value"] < total["ci_high"]
    # Each resample keeps all 8 days' bars: a day whose model was not drawn would leave its bars out.
    bars = metrics_table(_rows({k: [0.0] * 30 for k in [(d, f"m{d}") for d in range(8)]}, cost=[1e-4] * 30),
                         window="trailing", trading_day=DAY0, n_boot=200)
    paid = bars.filter(pl.col("metric") == "costs_paid").row(0, named=True)
    assert paid["ci_low"] == pytest.approx(8 * 30 * 1e-4) and paid["ci_high"] == pytest.approx(8 * 30 * 1e-4)
