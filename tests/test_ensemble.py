"""Ensembles: weight math, probability averaging, weighted mean actions, JSON manifest round trip."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import pipeline.envs  # noqa: F401 - registers the pipeline ids
from pipeline.agents.clstm_ppo import CLSTMPPO
from pipeline.agents.ensemble import (
    MANIFEST_FILE,
    PolicyEnsemble,
    ensemble_weights,
    load_member,
    sharpe_ratio,
    validation_sharpe,
)
from pipeline.agents.sb3 import BaselineConfig, train_baseline

DISCRETE_ID = "pipeline/IntradayTrading-v0"
CONTINUOUS_ID = "pipeline/PortfolioAllocation-v0"
TINY_SAC = {"learning_starts": 32, "batch_size": 32, "policy_kwargs": {"net_arch": [16]}}
TINY_PPO = {"n_steps": 64, "batch_size": 32, "n_epochs": 1, "policy_kwargs": {"net_arch": [16]}}


class FixedProbs:
    """Stub member with constant action probabilities (isolates the averaging from any model)."""

    discrete = True
    obs_shape = (3,)

    def __init__(self, probs: list[float]) -> None:
        self.probs = np.asarray(probs)

    def action_probs(self, obs: np.ndarray, state: object = None, episode_start: object = None) -> np.ndarray:
        return np.tile(self.probs, (np.atleast_2d(obs).shape[0], 1))


class FixedAction:
    """Stub continuous member returning one constant action."""

    discrete = False
    obs_shape = (3,)

    def __init__(self, action: list[float]) -> None:
        self.action = np.asarray(action, dtype=np.float32)

    def predict(self, obs: np.ndarray, state: object = None, episode_start: object = None,
                deterministic: bool = True) -> tuple[np.ndarray, None]:
        return np.tile(self.action, (np.atleast_2d(obs).shape[0], 1)), None


class RecordRewards(gym.Wrapper):
    """Keeps every reward the wrapped env hands out: the validation returns a score is computed from."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.rewards: list[float] = []

    def step(self, action: object) -> tuple:
        out = self.env.step(action)
        self.rewards.append(float(out[1]))
        return out


def test_softmax_weights_follow_sharpe_and_temperature() -> None:
    w = ensemble_weights([1.0, 0.0, -1.0], "softmax", temperature=1.0)
    np.testing.assert_allclose(w, np.exp([1.0, 0.0, -1.0]) / np.exp([1.0, 0.0, -1.0]).sum())
    hot = ensemble_weights([1.0, 0.0, -1.0], "softmax", temperature=100.0)
    cold = ensemble_weights([1.0, 0.0, -1.0], "softmax", temperature=0.01)
    assert np.ptp(hot) < 0.01 and cold[0] > 0.999
    big = ensemble_weights([1000.0, 999.0], "softmax")  # no overflow
    assert np.isfinite(big).all() and big.sum() == pytest.approx(1.0)


def test_positive_weights_and_fallback_to_equal() -> None:
    np.testing.assert_allclose(ensemble_weights([2.0, 1.0, -3.0], "positive"), [2 / 3, 1 / 3, 0.0])
    np.testing.assert_allclose(ensemble_weights([-2.0, -1.0], "positive"), [0.5, 0.5])
    np.testing.assert_allclose(ensemble_weights([5.0, -1.0, 0.0, 2.0], "equal"), [0.25] * 4)


@pytest.mark.parametrize(("scores", "method", "temperature", "message"), [
    ([1.0, float("nan")], "softmax", 1.0, "finite"),
    ([1.0], "softmax", 0.0, "temperature"),
    ([], "softmax", 1.0, "non-empty"),
    ([1.0], "rank", 1.0, "weighting"),
])
def test_bad_weight_inputs_say_what_is_wrong(scores: list[float], method: str, temperature: float,
                                              message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ensemble_weights(scores, method, temperature)


def test_sharpe_ratio() -> None:
    assert sharpe_ratio([1.0, 1.0, 1.0]) == 0.0
    assert sharpe_ratio([1.0, 3.0]) == pytest.approx(2.0 / np.std([1.0, 3.0], ddof=1))


def test_probability_averaging_beats_majority_vote() -> None:
    # Two members mildly prefer action 0, one strongly prefers 2: a vote says 0, the weighted mean says 2.
    members = [FixedProbs([0.4, 0.3, 0.3]), FixedProbs([0.4, 0.3, 0.3]), FixedProbs([0.0, 0.0, 1.0])]
    ensemble = PolicyEnsemble(members, [0.3, 0.3, 0.4])
    obs = np.zeros((5, 3), dtype=np.float32)
    probs, _ = ensemble.action_probs(obs)
    np.testing.assert_allclose(probs, np.tile([0.24, 0.18, 0.58], (5, 1)))
    actions, _ = ensemble.predict(obs)
    assert actions.tolist() == [2] * 5
    assert ensemble.predict(obs[0])[0] == 2  # a single obs gives a single action
    sampled, _ = PolicyEnsemble(members, [0.3, 0.3, 0.4], seed=1).predict(np.zeros((4000, 3)), deterministic=False)
    np.testing.assert_allclose(np.bincount(sampled, minlength=3) / 4000, [0.24, 0.18, 0.58], atol=0.03)


def test_continuous_members_average_their_actions() -> None:
    ensemble = PolicyEnsemble([FixedAction([1.0, 0.0]), FixedAction([0.0, 1.0])], [0.75, 0.25])
    actions, _ = ensemble.predict(np.zeros((2, 3)))
    np.testing.assert_allclose(actions, [[0.75, 0.25], [0.75, 0.25]])
    with pytest.raises(ValueError, match="predict"):
        ensemble.action_probs(np.zeros((2, 3)))


def test_invalid_weights_and_mixed_members_are_refused() -> None:
    with pytest.raises(ValueError, match="sum to 1"):
        PolicyEnsemble([FixedProbs([1.0, 0.0])], [0.5])
    with pytest.raises(ValueError, match="mix discrete and continuous"):
        PolicyEnsemble([FixedProbs([1.0, 0.0]), FixedAction([1.0])], [0.5, 0.5])


def test_sb3_and_clstm_members_validation_weights_and_manifest_round_trip(tmp_path: Path) -> None:
    members: list[tuple[str, Path]] = []
    for seed in (0, 1):
        cfg = BaselineConfig(algo="ppo", total_timesteps=64, seed=seed, hparams=TINY_PPO)
        train_baseline(DISCRETE_ID, tmp_path / f"ppo_seed{seed}", cfg)
        members.append(("sb3", tmp_path / f"ppo_seed{seed}"))
    # An untrained CLSTM-PPO is enough to check the mixed-kind interface (probs + recurrent state, load by kind).
    members.append(("clstm_ppo", CLSTMPPO(DISCRETE_ID, num_envs=1, hidden=8, seed=2).save(tmp_path / "clstm")))
    scores, returns = [], []
    for kind, path in members:
        env = RecordRewards(gym.make(DISCRETE_ID))
        scores.append(validation_sharpe(load_member(kind, path), env, n_steps=40, seed=7))
        returns.append(np.asarray(env.rewards))
    # The score is the per-step Sharpe (mean / sample std, not annualized) of exactly the 40 validation rewards.
    assert [r.size for r in returns] == [40, 40, 40]
    assert any(r.std() > 0 for r in returns)  # at least one member's Sharpe is not the flat-returns 0
    expected = [r.mean() / r.std(ddof=1) if r.std(ddof=1) > 1e-12 else 0.0 for r in returns]
    np.testing.assert_allclose(scores, expected, rtol=1e-9, atol=1e-12)
    ensemble = PolicyEnsemble.from_members(members, scores, weighting="softmax", temperature=0.5)
    # Softmax of Sharpe / temperature, as the module docstring documents.
    softmax = np.exp(np.asarray(expected) / 0.5) / np.exp(np.asarray(expected) / 0.5).sum()
    np.testing.assert_allclose(ensemble.weights, softmax, rtol=1e-9)

    env = gym.make(DISCRETE_ID)
    obs = np.stack([env.reset(seed=s)[0] for s in range(6)])
    member_probs = [ensemble.policies[0].action_probs(obs), ensemble.policies[1].action_probs(obs),
                    ensemble.policies[2].action_probs(obs)[0]]
    mixed, states = ensemble.action_probs(obs)
    np.testing.assert_allclose(mixed, sum(w * p for w, p in zip(ensemble.weights, member_probs, strict=True)),
                               rtol=1e-6)
    assert len(states) == 3
    np.testing.assert_array_equal(ensemble.predict(obs)[0], mixed.argmax(-1))

    manifest = ensemble.save(tmp_path)
    saved = json.loads(manifest.read_text())
    assert manifest.name == MANIFEST_FILE
    # Relative paths: the folder can move.
    assert [m["path"] for m in saved["members"]] == ["ppo_seed0", "ppo_seed1", "clstm.safetensors"]
    assert [m["kind"] for m in saved["members"]] == ["sb3", "sb3", "clstm_ppo"]
    assert sum(m["weight"] for m in saved["members"]) == pytest.approx(1.0)
    loaded = PolicyEnsemble.load(tmp_path)
    np.testing.assert_allclose(loaded.action_probs(obs)[0], mixed, rtol=1e-6)
    assert loaded.scores == pytest.approx(scores) and loaded.weighting == "softmax"


def test_continuous_sb3_members_round_trip(tmp_path: Path) -> None:
    members = []
    for algo, hparams in (("sac", TINY_SAC), ("ppo", TINY_PPO)):
        train_baseline(CONTINUOUS_ID, tmp_path / algo, BaselineConfig(algo=algo, total_timesteps=64, hparams=hparams))
        members.append(("sb3", tmp_path / algo))
    ensemble = PolicyEnsemble.from_members(members, [0.5, -0.5], weighting="positive")
    np.testing.assert_allclose(ensemble.weights, [1.0, 0.0])
    ensemble = PolicyEnsemble.from_members(members, [1.0, 0.0], weighting="softmax", temperature=1.0)
    env = gym.make(CONTINUOUS_ID)
    obs = np.stack([env.reset(seed=s)[0] for s in range(3)])
    each = [p.predict(obs)[0] for p in ensemble.policies]
    expected = ensemble.weights[0] * each[0] + ensemble.weights[1] * each[1]
    np.testing.assert_allclose(ensemble.predict(obs)[0], expected, rtol=1e-5)
    assert ensemble.predict(obs)[0].shape == (3, *env.action_space.shape)
    ensemble.save(tmp_path)
    np.testing.assert_allclose(PolicyEnsemble.load(tmp_path).predict(obs)[0], expected, rtol=1e-5)
