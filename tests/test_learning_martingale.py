"""The negative control: the recipe that finds the planted signal (test_learning.py) finds no significant
out-of-sample edge on a martingale (alpha = 0) after costs."""

from __future__ import annotations

import numpy as np
from trading_controls import control_market, out_of_sample_pnl, t_statistic, train_control_agent

from pipeline.envs.intraday import LONG


def test_martingale_market_gives_no_significant_out_of_sample_edge() -> None:
    market = control_market(alpha=0.0, seed=11)
    agent = train_control_agent(market)
    pnl = out_of_sample_pnl(market, lambda obs: agent.predict(obs.numpy())[0])
    # One-sided test at 5% (t critical value for >= 9 degrees of freedom is <= 1.83).
    assert t_statistic(pnl) < 1.83, f"significant edge on a martingale: mean {pnl.mean():.2f}, n={len(pnl)}"
    buy_and_hold = out_of_sample_pnl(market, lambda obs: np.full(obs.shape[0], LONG))
    assert np.all(buy_and_hold != 0.0), "buy-and-hold pays the spread and fees, so it is never exactly 0"
