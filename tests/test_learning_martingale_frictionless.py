"""Negative control that trades: the same recipe and budget as the planted-signal test on a martingale with every
cost removed (no fee, no slippage, quoted at the mid), where trading is free, so the trained policy does trade and
any significant edge could only come from seeing the future. Its positive control, the same market with a planted
look-ahead, is test_learning_leak.py (a file of its own, so the two runs go to different test workers).
"""

from __future__ import annotations

import pytest
from trading_controls import (
    FRICTIONLESS,
    LEARNING_TIMEOUT_S,
    T_CRITICAL,
    Outcomes,
    agent_policy,
    control_market,
    out_of_sample,
    t_statistic,
    train_control_agent,
    with_fill_leak,
    without_spread,
)


def frictionless_outcomes(leak: bool) -> Outcomes:
    """The recipe trained and judged on the frictionless martingale, with the fill leak planted if `leak`."""
    market = without_spread(control_market(alpha=0.0, seed=11))
    market = with_fill_leak(market) if leak else market
    return out_of_sample(market, agent_policy(train_control_agent(market, FRICTIONLESS)), FRICTIONLESS)


@pytest.mark.timeout(LEARNING_TIMEOUT_S)
def test_frictionless_martingale_policy_trades_without_a_significant_edge() -> None:
    trained = frictionless_outcomes(leak=False)
    assert (trained.fills >= 2).all(), f"orders per (day, symbol): {trained.fills.tolist()}"
    assert t_statistic(trained.pnl) < T_CRITICAL, f"edge on a martingale: {trained.pnl.round(1).tolist()}"
