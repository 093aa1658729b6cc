"""The negative controls' statistic can fail: the frictionless martingale of
test_learning_martingale_frictionless.py with a deliberate look-ahead (feature 0 is the return the next fill
earns). The same recipe and budget find it, and the same statistic is significant.
"""

from __future__ import annotations

import pytest
from test_learning_martingale_frictionless import frictionless_outcomes
from trading_controls import LEARNING_TIMEOUT_S, T_CRITICAL, t_statistic


@pytest.mark.timeout(LEARNING_TIMEOUT_S)
def test_a_planted_look_ahead_is_found_by_the_same_recipe_and_statistic() -> None:
    trained = frictionless_outcomes(leak=True)
    assert t_statistic(trained.pnl) > T_CRITICAL, f"leak not found: {trained.pnl.round(1).tolist()}"
