"""Negative control that trades, and its positive control: the same recipe and budget as the planted-signal test
on a martingale with every cost removed (no fee, no slippage, quoted at the mid), where trading is free, so the
trained policy does trade and any significant edge could only come from seeing the future.

- Frictionless martingale: the policy trades on every (day, symbol) and its edge is not significant.
- The same market with a deliberate look-ahead (a feature that is the return the next fill earns): the recipe
  finds it and the same statistic is significant. The negative control's statistic is shown able to fail.
"""

from __future__ import annotations

import pytest
from trading_controls import (
    FRICTIONLESS,
    LEARNING_TIMEOUT_S,
    T_CRITICAL,
    agent_policy,
    control_market,
    out_of_sample,
    t_statistic,
    train_control_agent,
    with_fill_leak,
    without_spread,
)


def _trained_outcomes(leak: bool):
    market = without_spread(control_market(alpha=0.0, seed=11))
    market = with_fill_leak(market) if leak else market
    return out_of_sample(market, agent_policy(train_control_agent(market, FRICTIONLESS)), FRICTIONLESS)


@pytest.mark.timeout(LEARNING_TIMEOUT_S)
def test_frictionless_martingale_policy_trades_without_a_significant_edge() -> None:
    trained = _trained_outcomes(leak=False)
    assert (trained.fills >= 2).all(), f"orders per (day, symbol): {trained.fills.tolist()}"
    assert t_statistic(trained.pnl) < T_CRITICAL, f"edge on a martingale: {trained.pnl.round(1).tolist()}"


@pytest.mark.timeout(LEARNING_TIMEOUT_S)
def test_a_planted_look_ahead_is_found_by_the_same_recipe_and_statistic() -> None:
    trained = _trained_outcomes(leak=True)
    assert t_statistic(trained.pnl) > T_CRITICAL, f"leak not found: {trained.pnl.round(1).tolist()}"
