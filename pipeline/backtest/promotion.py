"""The promotion gate: may a candidate model replace the production model?

A candidate is promoted only if (1) every metric it reports is finite, (2) its training did not diverge, and
(3) on the validation days of its own dataset (after the embargo, never trained on) its daily net return beats
the production model's and the best baseline's by at least `margin`, with the bootstrap confidence interval of
the paired daily difference above 0. The oracle of the synthetic market is an upper bound, not a baseline to beat.

Everything here is a pure function of the numbers handed in; the assets decide what to run and record.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import polars as pl

from pipeline.backtest.metrics import paired_difference_ci

CANDIDATE, PRODUCTION = "candidate", "production"
NOT_BASELINES = (CANDIDATE, PRODUCTION, "oracle")


@dataclass(frozen=True)
class PromotionPolicy:
    """What a candidate must show to be promoted."""

    margin: float = 0.0
    """Mean daily net return (fraction of capital) by which it must beat production and the best baseline."""
    level: float = 0.9
    """Two-sided level of the bootstrap interval of the paired daily difference; its lower end must be > 0."""
    n_boot: int = 2000
    """Bootstrap resamples of the validation days."""
    max_approx_kl: float = 0.5
    """Training counts as diverged when the last update's approximate KL is above this (or not finite)."""
    seed: int = 0


@dataclass(frozen=True)
class Comparison:
    """The candidate against one strategy on the validation days (daily net returns, paired by day)."""

    against: str
    mean_difference: float
    ci_low: float
    ci_high: float
    days: int
    passed: bool


@dataclass(frozen=True)
class GateResult:
    """One condition of the gate: passed or not, and why, in words a person reads in the check's metadata."""

    name: str
    passed: bool
    reason: str
    details: dict[str, Any] = field(default_factory=dict)


def daily_returns(returns: pl.DataFrame) -> pl.DataFrame:
    """Per (strategy, trading_day): the day's net return (sum of the per-bar returns: each bar's PnL over the
    day's fixed capital), averaged over the models of a strategy (ensemble members)."""
    per_model = returns.group_by("strategy", "model_id", "trading_day").agg(pl.col("ret").sum())
    return per_model.group_by("strategy", "trading_day").agg(pl.col("ret").mean()).sort("strategy", "trading_day")


def _series(daily: pl.DataFrame, strategy: str) -> dict[Any, float]:
    rows = daily.filter(pl.col("strategy") == strategy)
    return dict(zip(rows["trading_day"].to_list(), rows["ret"].to_list(), strict=True))


def compare(daily: pl.DataFrame, against: str, policy: PromotionPolicy) -> Comparison:
    """Candidate minus `against`, paired by validation day."""
    mine, theirs = _series(daily, CANDIDATE), _series(daily, against)
    days = sorted(set(mine) & set(theirs))
    if not days:
        return Comparison(against, math.nan, math.nan, math.nan, 0, False)
    a = np.array([mine[d] for d in days])
    b = np.array([theirs[d] for d in days])
    mean, low, high = paired_difference_ci(a, b, n_boot=policy.n_boot, level=policy.level, seed=policy.seed)
    passed = bool(mean >= policy.margin and low > 0)
    return Comparison(against, mean, low, high, len(days), passed)


def best_baseline(daily: pl.DataFrame) -> str | None:
    """The baseline with the highest mean daily return on these days (the oracle excluded)."""
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
    daily: pl.DataFrame, model_metrics: Mapping[str, Any], has_production: bool, policy: PromotionPolicy
) -> list[GateResult]:
    """Every condition of the gate, in order: finite metrics, converged training, beats production, beats the
    best baseline. `daily` holds `daily_returns` of the candidate, production (if any) and the baselines."""
    results = []
    candidate_days = daily.filter(pl.col("strategy") == CANDIDATE)
    bad = _finite(model_metrics) + (["validation daily returns"] if not candidate_days.height or not
                                    np.isfinite(candidate_days["ret"].to_numpy()).all() else [])
    results.append(GateResult("metrics_finite", not bad, "every metric is finite" if not bad else
                              f"not finite: {', '.join(bad)}", {"not_finite": bad}))

    last = model_metrics.get("last", {})
    kl = last.get("losses/approx_kl")
    converged = kl is not None and math.isfinite(kl) and kl <= policy.max_approx_kl
    results.append(GateResult(
        "training_converged", converged,
        f"last approx KL {kl:.4g} <= {policy.max_approx_kl}" if converged else
        f"last approx KL is {kl} (limit {policy.max_approx_kl}): the policy was still jumping, or no update ran",
        {"approx_kl": kl, "limit": policy.max_approx_kl}))

    if has_production:
        results.append(_comparison_result("beats_production", compare(daily, PRODUCTION, policy), policy))
    else:
        results.append(GateResult("beats_production", True, "no model is in production yet: nothing to beat"))

    baseline = best_baseline(daily)
    if baseline is None:
        results.append(GateResult("beats_best_baseline", False, "no baseline was run on the validation days"))
    else:
        results.append(_comparison_result("beats_best_baseline", compare(daily, baseline, policy), policy))
    return results


def _comparison_result(name: str, comparison: Comparison, policy: PromotionPolicy) -> GateResult:
    c = comparison
    pct = f"{policy.level:.0%}"
    text = (f"vs {c.against} over {c.days} validation days: mean daily difference {c.mean_difference:+.3%} "
            f"({pct} CI {c.ci_low:+.3%} to {c.ci_high:+.3%}); needs >= {policy.margin:+.3%} with the CI above 0")
    return GateResult(name, c.passed, ("passed: " if c.passed else "failed: ") + text, asdict(c))
