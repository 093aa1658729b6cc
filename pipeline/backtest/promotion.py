"""The promotion gate: may a candidate model replace the production model?

A candidate is promoted only if (1) every metric it reports is finite, (2) its training did not diverge, and
(3) on the gate days of its own dataset (the window's last days, which nothing that chose the candidate read) its
mean daily net return beats the production model's and the best baseline's by at least `margin`, with the
bootstrap interval of the difference above 0.

The unit is the trading day: the paired daily differences (candidate minus the other strategy, same days) are
resampled by `arch`'s stationary bootstrap with a block length estimated from them
(`pipeline.backtest.metrics.mean_interval`). Per-bar differences are autocorrelated well past any fixed block (the
variance ratio of oracle minus momentum differences is 1.74 at 30 bars and 2.71 at 390), so a bar bootstrap is too
narrow. With fewer than `MIN_INTERVAL_DAYS` gate days there is no interval and the comparison fails, saying so.

"The best baseline" is the baseline with the highest mean daily return on the gate days themselves (a maximum over
the baselines, which makes the test stricter, never looser); the oracles of the synthetic market know the planted
signal and are reported beside the baselines, never counted among them. How often this gate promotes a model of a
market without signal, and how often one of a market with signal, is measured by benchmarks/gate_calibration.py.

Everything here is a pure function of the numbers handed in; the assets decide what to run and record.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import polars as pl

from pipeline.backtest.metrics import MIN_INTERVAL_DAYS, daily_frame, mean_interval
from pipeline.backtest.strategies import ORACLES

CANDIDATE, PRODUCTION = "candidate", "production"
NOT_BASELINES = (CANDIDATE, PRODUCTION, *ORACLES)


@dataclass(frozen=True)
class PromotionPolicy:
    """What a candidate must show to be promoted."""

    margin: float = 0.0
    """Mean daily net return (fraction of capital) by which it must beat production and the best baseline."""
    level: float = 0.9
    """Two-sided level of the bootstrap interval of the paired daily difference; its lower end must be > 0 (a
    one-sided test at (1 - level) / 2)."""
    n_boot: int = 2000
    """Bootstrap resamples of the gate days."""
    max_approx_kl: float = 0.5
    """Training counts as diverged when the last update's approximate KL is above this (or not finite)."""
    seed: int = 0


@dataclass(frozen=True)
class Comparison:
    """The candidate against one strategy on the gate days: the mean paired daily net return difference, its
    interval, how many days it rests on and the bootstrap's mean block length (days)."""

    against: str
    mean_difference: float
    ci_low: float
    ci_high: float
    days: int
    block_length: int
    passed: bool


@dataclass(frozen=True)
class GateResult:
    """One condition of the gate: passed or not, and why, in words a person reads in the check's metadata;
    `details` holds its figures (numbers the UI can plot across partitions)."""

    name: str
    passed: bool
    reason: str
    details: dict[str, Any] = field(default_factory=dict)


def daily_returns(returns: pl.DataFrame) -> pl.DataFrame:
    """Per (strategy, trading_day): the day's net return (`metrics.daily_frame`: compounded over its bars, the
    members of a strategy averaged)."""
    if returns.is_empty():
        return pl.DataFrame(schema={"strategy": pl.Utf8, "trading_day": pl.Date, "ret": pl.Float64})
    return daily_frame(returns).select("strategy", "trading_day", "ret")


def compare(returns: pl.DataFrame, against: str, policy: PromotionPolicy) -> Comparison:
    """Candidate minus `against` on the days both were run on: the mean daily difference and its interval."""
    daily = daily_returns(returns)
    paired = (daily.filter(pl.col("strategy") == CANDIDATE).join(
        daily.filter(pl.col("strategy") == against), on="trading_day", suffix="_other").sort("trading_day"))
    if paired.is_empty():
        return Comparison(against, math.nan, math.nan, math.nan, 0, 0, False)
    interval = mean_interval((paired["ret"] - paired["ret_other"]).to_numpy(), n_boot=policy.n_boot,
                             level=policy.level, seed=policy.seed)
    passed = bool(interval.mean >= policy.margin and interval.ci_low > 0)
    return Comparison(against, interval.mean, interval.ci_low, interval.ci_high, interval.days,
                      interval.block_length, passed)


def best_baseline(returns: pl.DataFrame) -> str | None:
    """The baseline with the highest mean daily return on these days (the oracles excluded)."""
    daily = daily_returns(returns)
    means = (daily.filter(~pl.col("strategy").is_in(NOT_BASELINES)).group_by("strategy")
             .agg(pl.col("ret").mean()).sort("ret", "strategy", descending=[True, False]))
    return means["strategy"][0] if means.height else None


def _finite(values: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Names of the non-finite numbers in a nested mapping of metrics."""
    bad: list[str] = []
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            bad += _finite(value, name + ".")
        elif isinstance(value, int | float) and not isinstance(value, bool) and not math.isfinite(value):
            bad.append(name)
    return bad


def evaluate_gate(
    returns: pl.DataFrame, model_metrics: Mapping[str, Any], has_production: bool, policy: PromotionPolicy,
    production_problem: str | None = None,
) -> list[GateResult]:
    """Every condition of the gate, in order: finite metrics, converged training, beats production, beats the
    best baseline. `returns` holds the per-bar rows of the candidate, production (if any) and the baselines on
    the gate days (`backtest_returns` columns). `production_problem` says why a production model that exists could
    not be run on these days: then beats_production fails with that reason (it is never skipped)."""
    results = []
    candidate_days = daily_returns(returns).filter(pl.col("strategy") == CANDIDATE)
    bad = _finite(model_metrics) + (["gate daily returns"] if not candidate_days.height or not
                                    np.isfinite(candidate_days["ret"].to_numpy()).all() else [])
    results.append(GateResult("metrics_finite", not bad, "every metric is finite" if not bad else
                              f"not finite: {', '.join(bad)}", {"not_finite": len(bad)}))

    last = model_metrics.get("last", {})
    kl = last.get("losses/approx_kl")
    converged = kl is not None and math.isfinite(kl) and kl <= policy.max_approx_kl
    results.append(GateResult(
        "training_converged", converged,
        f"last approx KL {kl:.4g} <= {policy.max_approx_kl}" if converged else
        f"last approx KL is {kl} (limit {policy.max_approx_kl}): the policy was still jumping, or no update ran",
        {"approx_kl": kl, "limit": policy.max_approx_kl} if kl is not None and math.isfinite(kl) else
        {"limit": policy.max_approx_kl}))

    if production_problem is not None:
        results.append(GateResult("beats_production", False, "failed: the production model could not be run on "
                                  f"the gate days: {production_problem}"))
    elif has_production:
        results.append(_comparison_result("beats_production", compare(returns, PRODUCTION, policy), policy))
    else:
        results.append(GateResult("beats_production", True, "no model is in production yet: nothing to beat"))

    baseline = best_baseline(returns)
    if baseline is None:
        results.append(GateResult("beats_best_baseline", False, "no baseline was run on the gate days"))
    else:
        results.append(_comparison_result("beats_best_baseline", compare(returns, baseline, policy), policy))
    return results


def _comparison_result(name: str, comparison: Comparison, policy: PromotionPolicy) -> GateResult:
    c = comparison
    details = {k: v for k, v in asdict(c).items() if not (isinstance(v, float) and not math.isfinite(v))}
    if c.days < MIN_INTERVAL_DAYS:
        return GateResult(name, False, f"failed: vs {c.against}, {c.days} gate days are too few for an interval "
                          f"(needs {MIN_INTERVAL_DAYS}); mean daily difference {c.mean_difference:+.3%}. Give the "
                          "dataset more gate_days", details)
    pct = f"{policy.level:.0%}"
    text = (f"vs {c.against} over {c.days} gate days: mean daily difference {c.mean_difference:+.3%} "
            f"({pct} CI {c.ci_low:+.3%} to {c.ci_high:+.3%}, stationary bootstrap, mean block {c.block_length} "
            f"days); needs >= {policy.margin:+.3%} with the CI above 0")
    return GateResult(name, c.passed, ("passed: " if c.passed else "failed: ") + text, details)
