"""Negative control with costs: the recipe and budget that find the planted signal (test_learning.py), on a
martingale (alpha = 0) with the same costs, find no significant out-of-sample edge.

Measured (seed 11): the trained policy never trades, the right answer to a market with nothing to predict and a
cost on every order, so this test alone cannot tell "no look-ahead" from "never trades". The frictionless
martingale (test_learning_martingale_frictionless.py) takes the costs away so that the policy does trade, and the
leak control there shows the same statistic catches a look-ahead.
"""

from __future__ import annotations

import pytest
from trading_controls import (
    LEARNING_TIMEOUT_S,
    T_CRITICAL,
    agent_policy,
    control_market,
    out_of_sample,
    t_statistic,
    train_control_agent,
)


@pytest.mark.timeout(LEARNING_TIMEOUT_S)
def test_martingale_after_costs_gives_no_significant_out_of_sample_edge() -> None:
    market = control_market(alpha=0.0, seed=11)
    trained = out_of_sample(market, agent_policy(train_control_agent(market)))
    assert t_statistic(trained.pnl) < T_CRITICAL, (
        f"significant edge on a martingale: mean {trained.pnl.mean():.2f}, {trained.fills.sum()} orders")
