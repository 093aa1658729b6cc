"""The negative control's statistic can fail: the martingale with costs of test_learning_martingale.py with a
deliberate look-ahead (feature 0 is the return the next fill earns). The same recipe and budget find it, and the
same statistic is significant. A file of its own, so its training run and the martingale's go to different test
workers.
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
    t_statistic,
    train_control_agent,
    with_fill_leak,
)


@pytest.mark.timeout(LEARNING_TIMEOUT_S)
def test_a_planted_look_ahead_is_found_by_the_same_recipe_and_statistic() -> None:
    market = with_fill_leak(control_market(alpha=0.0, seed=11))
    trained = out_of_sample(market, agent_policy(train_control_agent(market)))
    print(outcome_report(trained, "martingale with costs and a fill leak"))
    assert t_statistic(trained.pnl) > T_CRITICAL, f"leak not found: {trained.pnl.round(1).tolist()}"
