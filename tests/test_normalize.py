"""RunningNormalizer against numpy: running obs statistics, discounted-return reward scaling, safetensors round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.envs.normalize import RunningNormalizer


def test_obs_statistics_match_numpy_over_batches() -> None:
    rng = np.random.default_rng(0)
    batches = [
        rng.normal(loc=[1.0, -3.0, 10.0], scale=[0.5, 2.0, 7.0], size=(n, 4, 3)) for n in (5, 17, 1, 64)
    ]
    norm = RunningNormalizer(shape=(3,), clip_obs=1e9)
    for batch in batches:
        norm.normalize_obs(torch.as_tensor(batch, dtype=torch.float32), update=True)
    everything = np.concatenate([b.reshape(-1, 3) for b in batches]).astype(np.float32).astype(np.float64)
    np.testing.assert_allclose(norm.obs_rms.mean.numpy(), everything.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(norm.obs_rms.var.numpy(), everything.var(axis=0), rtol=1e-6)
    assert float(norm.obs_rms.count) == len(everything)

    probe = torch.as_tensor(batches[0], dtype=torch.float32)
    expected = (batches[0].astype(np.float32) - everything.mean(0)) / np.sqrt(everything.var(0) + 1e-8)
    np.testing.assert_allclose(
        norm.normalize_obs(probe, update=False).numpy(), expected, rtol=1e-5, atol=1e-6
    )


def test_obs_are_clipped_and_update_false_leaves_stats() -> None:
    norm = RunningNormalizer(shape=(2,), clip_obs=3.0)
    norm.normalize_obs(torch.randn(100, 2), update=True)
    before = norm.obs_rms.mean.clone()
    out = norm.normalize_obs(torch.full((4, 2), 1e6), update=False)
    assert torch.equal(norm.obs_rms.mean, before)
    assert torch.all(out == 3.0)


def test_reward_scaling_matches_discounted_return_std() -> None:
    rng = np.random.default_rng(1)
    gamma, steps, envs = 0.9, 50, 3
    rewards = rng.normal(0.5, 2.0, size=(steps, envs))
    dones = rng.random((steps, envs)) < 0.1
    norm = RunningNormalizer(shape=(1,), gamma=gamma, clip_reward=1e9)
    returns, seen = np.zeros(envs), []
    for r, d in zip(rewards, dones, strict=True):
        out = norm.scale_reward(torch.as_tensor(r), torch.as_tensor(d), update=True)
        returns = returns * gamma + r
        seen.append(returns.copy())
        returns[d] = 0.0
        np.testing.assert_allclose(out.numpy(), r / np.sqrt(np.var(np.concatenate(seen)) + 1e-8), rtol=1e-5)


def test_wrong_obs_shape_says_how_to_fix() -> None:
    norm = RunningNormalizer(shape=(5,))
    with pytest.raises(ValueError, match="shape"):
        norm.normalize_obs(torch.zeros(2, 3), update=True)


def test_safetensors_round_trip_gives_identical_outputs(tmp_path) -> None:
    norm = RunningNormalizer(shape=(16, 4), gamma=0.95, clip_obs=5.0, clip_reward=2.0)
    for _ in range(3):
        norm.normalize_obs(torch.randn(8, 16, 4) * 3 + 1, update=True)
        norm.scale_reward(torch.randn(8), torch.zeros(8, dtype=torch.bool), update=True)
    path = tmp_path / "normalizer.safetensors"
    norm.save(path)
    loaded = RunningNormalizer.load(path)
    obs, reward = torch.randn(6, 16, 4) * 10, torch.randn(8) * 5
    assert torch.equal(loaded.normalize_obs(obs, update=False), norm.normalize_obs(obs, update=False))
    done = torch.zeros(8, dtype=torch.bool)
    assert torch.equal(
        loaded.scale_reward(reward, done, update=False), norm.scale_reward(reward, done, update=False)
    )
    assert (loaded.gamma, loaded.clip_obs, loaded.clip_reward) == (0.95, 5.0, 2.0)
