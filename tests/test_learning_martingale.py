"""Negative control with costs: the recipe and budget that find the planted signal (test_learning.py), on a
martingale (alpha = 0) with the same costs, find no significant out-of-sample edge.

A negative control must trade to mean anything: a policy that never trades has no edge whether or not it could
see the future. Measured (seed 11, the intraday env's mostly-HOLD start, 10 test days): the policy traded on all 30
day-symbols (89 orders) for a mean of +$146.04 per day-symbol, t 1.43; the gate refused it (+0.29% a day over
momentum with a band, 90% interval -0.43% to +0.94%). (With a uniform start it never traded.) The leak control
(test_learning_leak.py: +$5,657 a day-symbol, t 6.23) shows that the same statistic catches a look-ahead.
"""

from __future__ import annotations

import pytest
from trading_controls import (
    LEARNING_TIMEOUT_S,
    T_CRITICAL,
    agent_policy,
    control_market,
    out_of_sample,
    outcome_report,
    promotion_gate,
    t_statistic,
    train_control_agent,
)


@pytest.mark.timeout(LEARNING_TIMEOUT_S)
def test_martingale_after_costs_gives_no_significant_out_of_sample_edge() -> None:
    market = control_market(alpha=0.0, seed=11)
    agent = train_control_agent(market)
    trained = out_of_sample(market, agent_policy(agent))
    print(outcome_report(trained, "martingale with costs"))
    # The negative control of the promotion gate: a model of a martingale is not promoted.
    gate = promotion_gate(market, agent)
    print("promotion gate:", gate)
    assert not gate["beats_best_baseline"][0], gate
    assert (trained.fills > 0).mean() >= 0.5, f"too few day-symbols traded: {trained.fills.tolist()}"
    assert t_statistic(trained.pnl) < T_CRITICAL, (
        f"significant edge on a martingale: mean {trained.pnl.mean():.2f}, {trained.fills.sum()} orders")
