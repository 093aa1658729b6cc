"""CLSTM-PPO learns: (a) CartPole-v1 to a mean return >= 195; (b) with a planted momentum signal (alpha > 0) it
beats flat and buy-and-hold out of sample (later days than training) after costs on IntradayTrading, each by a
margin with its own statistic. The promotion gate does not promote it: it does not beat 30-minute momentum by a
margin 10 days can show (a failed control, kept as a strict xfail). The negative controls, the same recipe and
budget on a martingale, are in files of their own (test_learning_martingale*.py), so the slow runs spread over the
test workers."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from trading_controls import (
    LEARNING_TIMEOUT_S,
    T_CRITICAL,
    agent_policy,
    buy_and_hold,
    control_market,
    margin_report,
    out_of_sample,
    outcome_report,
    promotion_gate,
    t_statistic,
    train_control_agent,
)

from pipeline.agents.clstm_ppo import CLSTMPPO
from pipeline.envs.tensors import MarketTensors


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


# The CartPole recipe (tests/test_cuda.py runs it on the GPU too): the rates that solve it within 20,480 steps.
CARTPOLE_HPARAMS = dict(num_envs=8, num_steps=64, hidden=32, window=4, actor_lr=1e-3, critic_lr=3e-3, seed=0)


def test_solves_cartpole() -> None:
    agent = CLSTMPPO("CartPole-v1", torch_threads=1, **CARTPOLE_HPARAMS)
    agent.learn(20_480)
    assert evaluate_cartpole(agent) >= 195


@pytest.fixture(scope="module")
def planted() -> tuple[MarketTensors, CLSTMPPO]:
    """The controls' recipe on days 0-5 of a strong (alpha 0.25) momentum market."""
    market = control_market(alpha=0.25, seed=1)
    return market, train_control_agent(market)


@pytest.mark.timeout(LEARNING_TIMEOUT_S)
def test_planted_signal_beats_flat_and_buy_and_hold_out_of_sample(planted) -> None:
    """Judge the deterministic policy on days 6-15 against each baseline on the same (day, symbol)s: a positive
    mean margin with a significant paired t."""
    market, agent = planted
    trained = out_of_sample(market, agent_policy(agent))
    held = out_of_sample(market, buy_and_hold)
    print(outcome_report(trained, "planted alpha 0.25"))
    assert trained.fills.sum() > 0
    for name, baseline in (("flat", np.zeros_like(trained.pnl)), ("buy-and-hold", held.pnl)):
        margin = trained.pnl - baseline
        assert margin.mean() > 0 and t_statistic(margin) > T_CRITICAL, margin_report(trained.pnl, baseline, name)


@pytest.mark.timeout(LEARNING_TIMEOUT_S)
@pytest.mark.xfail(strict=True, reason=(
    "A failed positive control, reported: the model that beats flat and buy-and-hold (+$694 a day-symbol, t 6.46) "
    "beats the strongest simple rule, 30-minute momentum, by only +0.11% a day over 10 test days (90% CI -0.35% "
    "to +0.52%), so the gate refuses it. Before the gate judged daily returns with a data-driven block bootstrap "
    "it passed on 4 days with a per-bar interval that was too narrow. strict: this test fails the day a model of "
    "this recipe is promoted, and the reason must then be removed."))
def test_the_gate_promotes_the_planted_signal_model(planted) -> None:
    market, agent = planted
    gate = promotion_gate(market, agent)
    print("promotion gate:", gate)
    assert all(passed for passed, _ in gate.values()), gate
