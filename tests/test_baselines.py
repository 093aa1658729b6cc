"""SB3 baselines: training with Monitor + VecNormalize, stats persisted as safetensors + JSON, exact reload."""

from __future__ import annotations

import pickle
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from safetensors.numpy import load_file

import pipeline.envs  # noqa: F401 - registers the pipeline ids
from pipeline.agents.sb3 import BaselineConfig, BaselinePolicy, load_baseline, train_baseline
from pipeline.agents.sb3_vecnorm import STATS_FILE, load_vecnormalize

DISCRETE_ID = "pipeline/IntradayTrading-v0"
CONTINUOUS_ID = "pipeline/PortfolioAllocation-v0"
TINY_PPO = {"n_steps": 64, "batch_size": 32, "n_epochs": 1, "policy_kwargs": {"net_arch": [16]}}
TINY_SAC = {"learning_starts": 32, "batch_size": 32, "policy_kwargs": {"net_arch": [16]}}


def env_observations(env_id: str, n: int, seed: int = 1) -> np.ndarray:
    """Raw observations from a few random steps of the env (what a deployed policy would be fed)."""
    env = gym.make(env_id)
    obs, _ = env.reset(seed=seed)
    env.action_space.seed(seed)
    rows = [obs]
    while len(rows) < n:
        obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
        rows.append(obs)
        if terminated or truncated:
            obs, _ = env.reset()
    return np.stack(rows).astype(np.float32)


@pytest.fixture(scope="module")
def ppo(tmp_path_factory: pytest.TempPathFactory) -> tuple[BaselinePolicy, Path]:
    path = tmp_path_factory.mktemp("ppo")
    cfg = BaselineConfig(algo="ppo", total_timesteps=128, seed=3, hparams=TINY_PPO)
    return train_baseline(DISCRETE_ID, path, cfg), path


def test_ppo_saves_stats_as_safetensors_and_json_not_pickle(ppo: tuple[BaselinePolicy, Path]) -> None:
    trained, path = ppo
    names = sorted(p.name for p in path.iterdir())
    assert names == ["baseline.json", "model.zip", "vecnormalize.json", "vecnormalize.safetensors"]
    stats = load_file(str(path / STATS_FILE))
    np.testing.assert_array_equal(stats["obs_rms.mean"], trained.vec_normalize.obs_rms.mean)
    assert float(stats["obs_rms.count"]) == trained.vec_normalize.obs_rms.count > 128  # updated while training


def test_reloaded_policy_normalizes_and_acts_like_the_trained_one(ppo: tuple[BaselinePolicy, Path]) -> None:
    trained, path = ppo
    loaded = load_baseline(path)
    obs = env_observations(DISCRETE_ID, 20)
    np.testing.assert_array_equal(loaded.normalize_obs(obs), trained.normalize_obs(obs))
    assert not np.allclose(loaded.normalize_obs(obs), obs)  # the stats really are applied
    assert not loaded.vec_normalize.training and not loaded.vec_normalize.norm_reward
    np.testing.assert_array_equal(loaded.predict(obs)[0], trained.predict(obs)[0])
    probs = loaded.action_probs(obs)
    assert probs.shape == (20, loaded.action_space.n)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(probs, trained.action_probs(obs), rtol=1e-6)
    single, _ = loaded.predict(obs[0])
    assert np.ndim(single) == 0 and single == loaded.predict(obs)[0][0]


def test_inference_reproduces_the_last_normalized_training_obs(ppo: tuple[BaselinePolicy, Path]) -> None:
    trained, path = ppo
    training_env = trained.model.get_env()
    raw_last = training_env.get_original_obs()  # the raw obs behind the model's last (normalized) input
    np.testing.assert_allclose(load_baseline(path).normalize_obs(raw_last), trained.model._last_obs, rtol=1e-6)


def test_loading_stats_never_unpickles(ppo: tuple[BaselinePolicy, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    trained, path = ppo

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("pickle used while loading normalization stats")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    vec_normalize = load_vecnormalize(path, trained.model.get_env().venv)
    np.testing.assert_array_equal(vec_normalize.obs_rms.var, trained.vec_normalize.obs_rms.var)
    assert vec_normalize.clip_obs == trained.vec_normalize.clip_obs
    assert vec_normalize.gamma == trained.vec_normalize.gamma


def test_loading_the_model_never_unpickles(ppo: tuple[BaselinePolicy, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    import cloudpickle

    trained, path = ppo

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("pickle used while loading the baseline")

    monkeypatch.setattr(cloudpickle, "loads", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    loaded = load_baseline(path)
    assert loaded.observation_space == trained.observation_space
    assert loaded.action_space == trained.action_space
    obs = env_observations(DISCRETE_ID, 4)
    np.testing.assert_array_equal(loaded.predict(obs)[0], trained.predict(obs)[0])


def test_sac_baseline_on_continuous_env(tmp_path: Path) -> None:
    cfg = BaselineConfig(algo="sac", total_timesteps=48, seed=0, hparams=TINY_SAC)
    trained = train_baseline(CONTINUOUS_ID, tmp_path, cfg)
    loaded = load_baseline(tmp_path)
    assert loaded.action_space == trained.action_space  # rebuilt from baseline.json, bounds included
    obs = env_observations(CONTINUOUS_ID, 8)
    np.testing.assert_allclose(loaded.predict(obs)[0], trained.predict(obs)[0], rtol=1e-6)
    assert loaded.predict(obs)[0].shape == (8, *loaded.action_space.shape)
    with pytest.raises(ValueError, match="discrete"):
        loaded.action_probs(obs)


def test_sac_on_discrete_env_is_refused_with_a_fix(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="algo='ppo'"):
        train_baseline(DISCRETE_ID, tmp_path, BaselineConfig(algo="sac", total_timesteps=8))


def test_missing_folder_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="train_baseline"):
        load_baseline(tmp_path)
