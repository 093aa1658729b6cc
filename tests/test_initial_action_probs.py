"""CLSTM-PPO's starting policy (`PPOConfig.initial_action_probs`): on IntradayTrading it starts mostly HOLD (the
env's suggestion), as sampled actions show; "uniform", an explicit list and envs without a suggestion behave as
documented; bad values are refused with a clear error; JSON configs (the trainer's) carry it as a list."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pipeline.agents.clstm_ppo import CLSTMPPO
from pipeline.agents.ppo_config import PPOConfig
from pipeline.envs.intraday import HOLD, IntradayTradingEnv
from pipeline.envs.tensors import synthetic_market_tensors

SAMPLES = 64 * 60  # sampled actions: the HOLD share has a standard error of about 0.006


@pytest.fixture(scope="module")
def env() -> IntradayTradingEnv:
    return IntradayTradingEnv(synthetic_market_tensors(days=2, source="numpy"), num_envs=64)


def sampled_action_shares(agent: CLSTMPPO, env: IntradayTradingEnv) -> np.ndarray:
    """Share of each action among SAMPLES stochastic actions of a fresh policy, along real observations."""
    obs, _ = env.reset(seed=0)
    counts = np.zeros(env.action_dim)
    for _ in range(SAMPLES // env.num_envs):
        actions, _ = agent.predict(obs, deterministic=False)
        counts += np.bincount(actions, minlength=env.action_dim)
        obs, *_ = env.step(torch.full((env.num_envs,), HOLD))
    return counts / counts.sum()


def test_intraday_policy_starts_mostly_holding(env: IntradayTradingEnv) -> None:
    agent = CLSTMPPO(env, seed=0, torch_threads=1)
    shares = sampled_action_shares(agent, env)
    assert np.allclose(shares, env.initial_action_probs, atol=0.03), shares


def test_uniform_start_on_request_and_without_an_env_suggestion(env: IntradayTradingEnv) -> None:
    shares = sampled_action_shares(CLSTMPPO(env, seed=0, initial_action_probs="uniform"), env)
    assert np.allclose(shares, 0.25, atol=0.03), shares
    cartpole = CLSTMPPO("CartPole-v1", seed=0, num_envs=2)  # no initial_action_probs of its own
    assert torch.equal(cartpole.policy.actor.head[-1].bias, torch.zeros(2))


def test_an_explicit_distribution_is_normalized_and_used(env: IntradayTradingEnv) -> None:
    shares = sampled_action_shares(CLSTMPPO(env, seed=0, initial_action_probs=[1, 1, 1, 7]), env)
    assert np.allclose(shares, [0.1, 0.1, 0.1, 0.7], atol=0.03), shares


def test_bad_distributions_are_refused(env: IntradayTradingEnv) -> None:
    with pytest.raises(ValueError, match="one value > 0 per action"):
        CLSTMPPO(env, initial_action_probs=[0.5, 0.5])
    with pytest.raises(ValueError, match="every probability must be a number > 0"):
        PPOConfig(initial_action_probs=[0.9, 0.1, 0.0, 0.0])
    with pytest.raises(ValueError, match='use "env", "uniform"'):
        PPOConfig(initial_action_probs="hold")


def test_a_json_config_carries_the_distribution() -> None:
    cfg = PPOConfig.preset("small_budget", initial_action_probs=[0.7, 0.1, 0.1, 0.1])
    assert PPOConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
