"""CLSTMPPO API: env kinds, determinism, save/load round trip (normalizer included), predict/action_probs."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from pipeline.agents import clstm_ppo
from pipeline.agents.clstm_ppo import CLSTMPPO
from pipeline.agents.network import CLSTMActorCritic
from pipeline.agents.ppo_config import PPOConfig

TINY = dict(num_envs=4, num_steps=32, hidden=16, window=4, torch_threads=1, critic_warmup_epochs=2)


def _obs_batch(n: int = 6) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(n, 4)).astype(np.float32) * 0.1


def _trained(seed: int) -> CLSTMPPO:
    agent = CLSTMPPO("CartPole-v1", seed=seed, **TINY)
    agent.learn(3 * 4 * 32)
    return agent


def test_same_seed_twice_gives_identical_actions_and_weights() -> None:
    first, second, other = _trained(7), _trained(7), _trained(8)
    obs = _obs_batch()
    np.testing.assert_array_equal(first.predict(obs)[0], second.predict(obs)[0])
    np.testing.assert_array_equal(first.action_probs(obs)[0], second.action_probs(obs)[0])
    for p, q in zip(first.policy.parameters(), second.policy.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    assert first.num_updates == 2  # one warm-up rollout, then two PPO updates
    differs = any(not torch.equal(p, q) for p, q in zip(first.policy.parameters(), other.policy.parameters(),
                                                          strict=True))
    assert differs, "a different seed should give different weights"


def test_save_load_round_trip_gives_identical_actions(tmp_path) -> None:
    agent = _trained(3)
    obs = _obs_batch()
    starts = np.array([True, False, True, False, False, True])
    state = np.random.default_rng(1).normal(size=(6, 4, 4)).astype(np.float32)
    path = agent.save(tmp_path / "model")
    assert path.name == "model.safetensors"
    loaded = CLSTMPPO.load(path)
    assert loaded.env is None and loaded.num_updates == agent.num_updates
    for key, value in agent.normalizer.state_dict().items():
        torch.testing.assert_close(loaded.normalizer.state_dict()[key], value, rtol=0, atol=0)
    for deterministic in (True, False):
        torch.manual_seed(0)
        a1, s1 = agent.predict(obs, state, starts, deterministic=deterministic)
        torch.manual_seed(0)
        a2, s2 = loaded.predict(obs, state, starts, deterministic=deterministic)
        np.testing.assert_array_equal(a1, a2)
        np.testing.assert_array_equal(s1, s2)
    np.testing.assert_array_equal(agent.action_probs(obs)[0], loaded.action_probs(obs)[0])


def test_rolling_window_state_for_1d_observations() -> None:
    agent = CLSTMPPO("CartPole-v1", **TINY)
    obs = _obs_batch(2)
    action, state = agent.predict(obs)
    assert action.shape == (2,) and state.shape == (2, 4, 4)
    assert np.all(state[:, :-1] == 0)
    _, state2 = agent.predict(obs * 2, state)
    np.testing.assert_array_equal(state2[:, -2], state[:, -1])
    _, restarted = agent.predict(obs, state2, episode_start=np.array([True, False]))
    assert np.all(restarted[0, :-1] == 0) and np.any(restarted[1, :-1] != 0)
    probs, _ = agent.action_probs(obs)
    assert probs.shape == (2, 2)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-6)
    single, _ = agent.predict(obs[0])
    assert np.ndim(single) == 0


def test_accepts_env_instance_vector_env_and_rejects_next_step_autoreset() -> None:
    own_count = {k: v for k, v in TINY.items() if k != "num_envs"}
    agent = CLSTMPPO(gym.make("CartPole-v1"), **own_count)
    assert agent.env.num_envs == agent.config.num_envs == 1
    agent.learn(2 * 32)
    assert agent.num_timesteps == 64
    same_step = gym.make_vec("CartPole-v1", num_envs=3, vectorization_mode="sync",
                             vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP})
    assert CLSTMPPO(same_step, **own_count).config.num_envs == 3
    next_step = gym.make_vec("CartPole-v1", num_envs=2, vectorization_mode="sync")
    with pytest.raises(ValueError, match="same-step autoreset"):
        CLSTMPPO(next_step, **own_count)


def test_num_envs_lives_in_the_env_and_a_different_count_is_refused(tmp_path) -> None:
    assert CLSTMPPO("CartPole-v1", hidden=8).env.num_envs == 8  # a gymnasium id: 8 copies unless told
    with pytest.raises(ValueError, match="the env has 3 parallel envs but num_envs=4"):
        CLSTMPPO(gym.make_vec("CartPole-v1", num_envs=3, vectorization_mode="sync",
                              vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP}), **TINY)
    path = CLSTMPPO("CartPole-v1", **TINY).save(tmp_path / "four")
    assert CLSTMPPO.load(path, env="CartPole-v1").env.num_envs == 4  # the checkpoint's count builds the id
    with pytest.raises(ValueError, match="num_envs=1"):
        CLSTMPPO.load(path, env=gym.make("CartPole-v1"))
    assert CLSTMPPO.load(path, env=gym.make("CartPole-v1"), num_envs=1).env.num_envs == 1


def test_typed_config_with_keyword_overrides_and_checked_values() -> None:
    base = PPOConfig(hidden=16, seed=3, num_envs=2)
    agent = CLSTMPPO("CartPole-v1", base, window=4)
    assert (agent.config.hidden, agent.config.seed, agent.config.window, agent.config.num_envs) == (16, 3, 4, 2)
    assert base.window == PPOConfig().window  # overrides make a copy
    with pytest.raises(TypeError, match="learning_rate.*valid names"):
        CLSTMPPO("CartPole-v1", learning_rate=1e-3)
    with pytest.raises(TypeError, match="num_steps=True should be int"):
        CLSTMPPO("CartPole-v1", num_steps=True)
    with pytest.raises(ValueError, match="out of range"):
        CLSTMPPO("CartPole-v1", gamma=1.5)
    with pytest.raises(TypeError, match="config must be a PPOConfig"):
        CLSTMPPO("CartPole-v1", {"seed": 1})
    assert PPOConfig.from_dict({"actor_lr": 1, "extra": {"days": 3}}).actor_lr == 1  # JSON ints for floats


def test_continuous_actions_use_a_gaussian_head() -> None:
    agent = CLSTMPPO("Pendulum-v1", **TINY)
    assert not agent.discrete and agent.policy.log_std is not None
    agent.learn(2 * 4 * 32)
    obs = np.zeros((3, 3), dtype=np.float32)
    mean_action, _ = agent.predict(obs, deterministic=True)
    again, _ = agent.predict(obs, deterministic=True)
    sampled, _ = agent.predict(obs, deterministic=False)
    assert mean_action.shape == (3, 1) and mean_action.dtype == np.float32
    np.testing.assert_array_equal(mean_action, again)
    assert not np.array_equal(mean_action, sampled)
    with pytest.raises(ValueError, match="discrete"):
        agent.action_probs(obs)


def test_network_runs_one_lstm_call_per_trunk_over_whole_windows() -> None:
    net = CLSTMActorCritic(obs_features=5, action_dim=3, discrete=True, hidden=8)
    calls: list[tuple[int, ...]] = []
    for lstm in (net.shared_lstm, net.actor.lstm, net.critic.lstm):
        lstm.register_forward_hook(lambda mod, inp, out: calls.append(tuple(inp[0].shape)))
    seq = net.shared(torch.randn(7, 16, 5))
    net.actor_out(seq), net.critic_out(seq)
    assert calls == [(7, 16, 8)] * 3


class StepClock:
    """perf_counter stand-in that moves 0.5 s per call, so SPS has one exact value instead of a timing."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        self.now += 0.5
        return self.now


def test_diagnostics_go_to_tensorboard_and_to_the_returned_history(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    # Only this module's clock: the rollout start and the end of its update are read once each, 0.5 s apart.
    monkeypatch.setattr(clstm_ppo, "time", StepClock())
    agent = CLSTMPPO("CartPole-v1", tensorboard_dir=str(tmp_path), **TINY)
    agent.learn(3 * 4 * 32)
    assert len(agent.history) == 2 and agent.history[-1]["update"] == 2
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"charts/SPS", "losses/approx_kl", "losses/clipfrac", "losses/explained_variance",
            "critic/value_mc_corr", "losses/entropy_pct_of_initial"} <= scalars
    # SPS is the update's env steps (num_envs x num_steps = 128) over the time from rollout start to update end,
    # logged at the step count reached; the first rollout only warms the critic and logs nothing.
    sps = events.Scalars("charts/SPS")
    steps = TINY["num_envs"] * TINY["num_steps"]
    assert [e.value for e in sps] == pytest.approx([steps / 0.5] * 2)
    assert [e.step for e in sps] == [2 * steps, 3 * steps]
    assert [h["charts/SPS"] for h in agent.history] == pytest.approx([steps / 0.5] * 2)
