"""RunningNormalizer against numpy: running obs statistics, discounted-return reward scaling, safetensors round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.agents.normalize import RETURNS_KEY, RunningNormalizer


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


def _reward_stream(steps: int, envs: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(0.3, 1.5, size=(steps, envs)), rng.random((steps, envs)) < 0.05


def test_discounted_return_is_saved_so_a_resumed_run_scales_like_an_uninterrupted_one(tmp_path) -> None:
    rewards, dones = _reward_stream(40, 4, seed=3)
    straight = RunningNormalizer(shape=(1,), gamma=0.9, clip_reward=1e9)
    first = RunningNormalizer(shape=(1,), gamma=0.9, clip_reward=1e9)
    for r, d in zip(rewards[:20], dones[:20], strict=True):
        straight.scale_reward(torch.as_tensor(r), torch.as_tensor(d), update=True)
        first.scale_reward(torch.as_tensor(r), torch.as_tensor(d), update=True)
    assert first.state_dict()[RETURNS_KEY].shape == (4,)
    first.save(tmp_path / "normalizer.safetensors")
    resumed = RunningNormalizer.load(tmp_path / "normalizer.safetensors")
    torch.testing.assert_close(resumed.state_dict()[RETURNS_KEY], first.state_dict()[RETURNS_KEY], rtol=0, atol=0)
    for r, d in zip(rewards[20:], dones[20:], strict=True):
        expected = straight.scale_reward(torch.as_tensor(r), torch.as_tensor(d), update=True)
        got = resumed.scale_reward(torch.as_tensor(r), torch.as_tensor(d), update=True)
        assert torch.equal(got, expected)
    for key, value in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[key], value, rtol=0, atol=0)


def _restarted_copy(state: dict[str, torch.Tensor]) -> RunningNormalizer:
    """A normalizer with `state`'s statistics whose discounted returns restart at 0 (the old behaviour)."""
    norm = RunningNormalizer(shape=(1,))
    norm.load_state_dict({k: v for k, v in state.items() if k != RETURNS_KEY})
    return norm


def test_returns_restart_at_zero_when_loaded_into_a_different_num_envs() -> None:
    rewards, dones = _reward_stream(10, 4, seed=4)
    norm = RunningNormalizer(shape=(1,), gamma=0.9)
    for r, d in zip(rewards, dones, strict=True):
        norm.scale_reward(torch.as_tensor(r), torch.as_tensor(d), update=True)
    state = norm.state_dict()
    assert bool(state[RETURNS_KEY].abs().sum() > 0)
    wider = RunningNormalizer(shape=(1,))
    wider.load_state_dict(state)
    reference = _restarted_copy(state)
    reward, done = torch.linspace(-1, 1, 6, dtype=torch.float64), torch.zeros(6, dtype=torch.bool)
    assert torch.equal(wider.scale_reward(reward, done, update=True), reference.scale_reward(reward, done, update=True))
    assert wider.state_dict()[RETURNS_KEY].shape == (6,)
    torch.testing.assert_close(wider.state_dict()[RETURNS_KEY], reward, rtol=0, atol=0)
    torch.testing.assert_close(wider.state_dict()["ret_var"], reference.state_dict()["ret_var"], rtol=0, atol=0)


def test_state_without_discounted_return_loads_with_returns_at_zero() -> None:
    norm = RunningNormalizer(shape=(1,), gamma=0.9)
    for r, d in zip(*_reward_stream(10, 3, seed=5), strict=True):
        norm.scale_reward(torch.as_tensor(r), torch.as_tensor(d), update=True)
    old = _restarted_copy(norm.state_dict())
    assert old.state_dict()[RETURNS_KEY].numel() == 0
    torch.testing.assert_close(old.state_dict()["ret_count"], norm.state_dict()["ret_count"], rtol=0, atol=0)
    reward = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    old.scale_reward(reward, torch.zeros(3, dtype=torch.bool), update=True)
    torch.testing.assert_close(old.state_dict()[RETURNS_KEY], reward, rtol=0, atol=0)


def test_switched_off_halves_pass_values_through_and_keep_no_statistics() -> None:
    norm = RunningNormalizer(shape=(2,), norm_obs=False, norm_reward=True, clip_reward=1e9)
    obs = torch.tensor([[3.0, -40.0], [5.0, 7.0]], dtype=torch.float64)
    out = norm.normalize_obs(obs, update=True)
    assert out.dtype == torch.float32 and torch.equal(out, obs.float())
    assert float(norm.state_dict()["obs_count"]) == 0
    scaled = norm.scale_reward(torch.tensor([2.0, 2.0]), torch.tensor([False, False]), update=True)
    assert float(norm.state_dict()["ret_count"]) == 2 and not torch.equal(scaled, torch.tensor([2.0, 2.0]))
    raw = RunningNormalizer(shape=(2,), norm_reward=False)
    reward = torch.tensor([2.0, -1.0])
    assert torch.equal(raw.scale_reward(reward, torch.tensor([False, True]), update=True), reward)
    assert float(raw.state_dict()["ret_count"]) == 0
