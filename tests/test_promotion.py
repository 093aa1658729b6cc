"""The promotion gate on hand-made per-bar returns: each condition passes and fails for the reason it names."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import numpy as np
import polars as pl

from pipeline.backtest.promotion import PromotionPolicy, best_baseline, compare, evaluate_gate

DAYS = [date(2024, 7, d) for d in (8, 9, 10, 11)]
BARS = 390
HEALTHY = {"validation": {"sharpe": 1.2}, "last": {"losses/approx_kl": 0.01}}


def _rows(strategy: str, ret: np.ndarray, model_id: str | None = None) -> pl.DataFrame:
    ts = [datetime(d.year, d.month, d.day, 13, 31, tzinfo=UTC) + timedelta(minutes=m) for d in DAYS
          for m in range(BARS)]
    day = [d for d in DAYS for _ in range(BARS)]
    return pl.DataFrame({"trading_day": day, "ts": ts, "strategy": strategy, "model_id": model_id, "ret": ret,
                         "position": 0.0, "cost": 0.0})


def _market(edge: float, seed: int = 0) -> pl.DataFrame:
    """Candidate = momentum + `edge` per bar + noise; flat and a lucky oracle beside them."""
    rng = np.random.default_rng(seed)
    n = len(DAYS) * BARS
    momentum = 2e-5 + rng.normal(0, 2e-4, n)  # a small positive drift: the best baseline
    return pl.concat([
        _rows("candidate", momentum + edge + rng.normal(0, 1e-4, n), "m1"),
        _rows("momentum", momentum), _rows("flat", np.zeros(n)), _rows("oracle", np.full(n, 1e-3)),
    ])


def test_a_planted_edge_passes_and_no_edge_does_not() -> None:
    policy = PromotionPolicy()
    strong = compare(_market(2e-5), "momentum", policy)
    assert strong.passed and strong.ci_low > 0 and strong.days == 4
    # Scaled to a day: 390 bars x 2e-5, within 3 standard errors (1e-4 / sqrt(1560) x 390 = 1e-3 each).
    assert abs(strong.mean_difference - 2e-5 * BARS) < 3e-3
    for seed in range(5):
        none = compare(_market(0.0, seed), "momentum", policy)
        assert none.ci_low < none.mean_difference < none.ci_high
    assert sum(compare(_market(0.0, s), "momentum", policy).passed for s in range(5)) <= 1


def test_the_margin_is_in_daily_return() -> None:
    edge = compare(_market(2e-5), "momentum", PromotionPolicy())
    assert not compare(_market(2e-5), "momentum", PromotionPolicy(margin=edge.mean_difference + 1e-4)).passed


def test_the_oracle_is_not_a_baseline_to_beat() -> None:
    assert best_baseline(_market(0.0)) == "momentum"  # the oracle earns most but is excluded


def test_each_condition_names_its_failure() -> None:
    returns = _market(2e-5)
    passed = {g.name: g.passed for g in evaluate_gate(returns, HEALTHY, False, PromotionPolicy())}
    assert passed == {"metrics_finite": True, "training_converged": True, "beats_production": True,
                      "beats_best_baseline": True}
    broken = evaluate_gate(returns, {"validation": {"sharpe": float("nan")}, "last": {"losses/approx_kl": 3.0}},
                           False, PromotionPolicy())
    reasons = {g.name: (g.passed, g.reason) for g in broken}
    assert reasons["metrics_finite"] == (False, "not finite: validation.sharpe")
    assert not reasons["training_converged"][0] and "3" in reasons["training_converged"][1]
    # With a production model that is the candidate's equal, the candidate must beat it, and cannot.
    twin = pl.concat([returns, returns.filter(pl.col("strategy") == "candidate").with_columns(
        pl.lit("production").alias("strategy"), pl.lit("m0").alias("model_id"))])
    production = {g.name: g for g in evaluate_gate(twin, HEALTHY, True, PromotionPolicy())}["beats_production"]
    assert not production.passed and "vs production" in production.reason
