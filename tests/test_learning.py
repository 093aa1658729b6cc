"""CLSTM-PPO learns: (a) CartPole-v1 to a mean return >= 195; (b) with a planted momentum signal (alpha > 0) it
beats flat and buy-and-hold out of sample (later days than training) after costs on IntradayTrading. The negative
control, the same recipe on a martingale, is in test_learning_martingale.py (a file of its own, so the two slow
runs go to different test workers)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from trading_controls import control_market, out_of_sample_pnl, t_statistic, train_control_agent

from pipeline.agents.clstm_ppo import CLSTMPPO
from pipeline.envs.intraday import LONG


def evaluate_cartpole(agent: CLSTMPPO, episodes: int = 8) -> float:
    """Mean return of one deterministic episode in each of `episodes` parallel CartPoles."""
    vec = gym.make_vec("CartPole-v1", num_envs=episodes, vectorization_mode="sync",
                       vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP})
    obs, _ = vec.reset(seed=1000)
    state, starts = None, np.ones(episodes, dtype=bool)
    totals, finished = np.zeros(episodes), np.zeros(episodes, dtype=bool)
    while not finished.all():
        action, state = agent.predict(obs, state, starts)
        obs, reward, term, trunc, _ = vec.step(action)
        totals += reward * ~finished
        starts = term | trunc
        finished |= starts
    return float(totals.mean())


def test_solves_cartpole() -> None:
    agent = CLSTMPPO("CartPole-v1", num_envs=8, num_steps=64, hidden=32, window=4, actor_lr=1e-3,
                     critic_lr=3e-3, torch_threads=1, seed=0)
    agent.learn(20_480)
    assert evaluate_cartpole(agent) >= 195


def test_planted_signal_beats_flat_and_buy_and_hold_out_of_sample() -> None:
    """Train on days 0-5 of a strong (alpha 0.25) momentum market, judge the deterministic policy on days 6-9."""
    market = control_market(alpha=0.25, seed=1)
    agent = train_control_agent(market)
    pnl = out_of_sample_pnl(market, lambda obs: agent.predict(obs.numpy())[0])
    buy_and_hold = out_of_sample_pnl(market, lambda obs: np.full(obs.shape[0], LONG))
    assert pnl.mean() > 0, f"no better than flat out of sample: mean PnL {pnl.mean():.2f} per day-symbol"
    assert pnl.mean() > buy_and_hold.mean(), f"{pnl.mean():.2f} vs buy-and-hold {buy_and_hold.mean():.2f}"
    assert t_statistic(pnl) > 1.83, f"edge not significant: t={t_statistic(pnl):.2f}, n={len(pnl)}"
