"""CLSTM-PPO checkpoints: atomic writes, pickle refusal, best_* files, exact resume mid-episode on a real env,
early stopping, SIGTERM (in-process and through the trainer CLI) and divergence handling."""

from __future__ import annotations

import os
import pickle
import random
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from pipeline.agents import checkpoints as ckpt
from pipeline.agents.clstm_ppo import CLSTMPPO
from pipeline.agents.normalize import RETURNS_KEY
from pipeline.agents.ppo_config import PPOConfig
from pipeline.agents.ppo_update import TrainingDivergedError
from pipeline.envs.intraday import IntradayTradingEnv
from pipeline.envs.options import OptionsTradingEnv
from pipeline.envs.options_chain import black_scholes_chain
from pipeline.envs.portfolio import PortfolioAllocationEnv
from pipeline.envs.tensors import synthetic_market_tensors
from pipeline.training.run import GymData, TrainingRun

ROLLOUT = 8  # steps per env per update = episode length of CountingEnv
TINY = dict(num_steps=ROLLOUT, hidden=8, torch_threads=1, critic_warmup_epochs=1, num_minibatches=2)
TINY_LR = PPOConfig().actor_lr


class CountingEnv:
    """Native BatchedEnv: (3, 2) windows, reward 1 for action 1 else -0.5, episodes truncated after
    `episode_length` steps (8 = ROLLOUT unless given).

    Hooks: `nan_after` makes rewards NaN after that many steps; `sigterm_at` sends SIGTERM to this process.
    """

    discrete = True
    action_dim = 2

    def __init__(self, num_envs: int = 4, nan_after: int | None = None, sigterm_at: int | None = None,
                 episode_length: int = ROLLOUT) -> None:
        self.num_envs, self.device, self.obs_shape = num_envs, torch.device("cpu"), (3, 2)
        self.episode_length = episode_length
        self.t = torch.zeros(num_envs)
        self.steps, self.nan_after, self.sigterm_at = 0, nan_after, sigterm_at

    def _obs(self) -> torch.Tensor:
        row = torch.stack([self.t / ROLLOUT, torch.ones_like(self.t)], dim=-1)
        return row.unsqueeze(1).expand(-1, 3, -1).contiguous()

    def reset(self, seed: int | None = None) -> tuple[torch.Tensor, dict]:
        self.t.zero_()
        return self._obs(), {}

    def step(self, actions: torch.Tensor):
        self.steps += 1
        if self.steps == self.sigterm_at:
            os.kill(os.getpid(), signal.SIGTERM)
        self.t += 1
        reward = torch.where(actions == 1, 1.0, -0.5)
        if self.nan_after is not None and self.steps > self.nan_after:
            reward = reward * float("nan")
        truncated = self.t >= self.episode_length
        final = self._obs()
        self.t = self.t.masked_fill(truncated, 0.0)
        return self._obs(), reward, torch.zeros_like(truncated), truncated, {"final_obs": final}


def test_write_is_atomic_and_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch) -> None:
    target = ckpt.write_checkpoint(tmp_path / "latest", {"w": torch.arange(3.0)}, {"step": 1})
    assert [p.name for p in tmp_path.iterdir()] == ["latest.safetensors"]
    tensors, meta = ckpt.read_checkpoint(tmp_path)
    assert meta == {"step": 1} and torch.equal(tensors["w"], torch.arange(3.0))

    def crash(tensors, filename, metadata):
        Path(filename).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt, "save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        ckpt.write_checkpoint(target, {"w": torch.zeros(3)}, {"step": 2})
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["latest.safetensors"]
    assert ckpt.read_checkpoint(target)[1] == {"step": 1}


class _Exploit:
    def __reduce__(self):
        return (Path.touch, (Path(os.environ["H7_MARKER"]),))


def test_loading_refuses_a_planted_pickle(tmp_path, monkeypatch) -> None:
    marker = tmp_path / "pwned"
    monkeypatch.setenv("H7_MARKER", str(marker))
    agent = CLSTMPPO(CountingEnv(), **TINY)
    folder = tmp_path / "ckpts"
    agent.save(folder / "latest")
    assert CLSTMPPO.load(folder).num_updates == 0
    (folder / "normalizer.pkl").write_bytes(pickle.dumps(_Exploit()))
    with pytest.raises(ckpt.UnsafeCheckpointError, match="normalizer.pkl"):
        CLSTMPPO.load(folder)
    disguised = tmp_path / "clean" / "latest.safetensors"
    disguised.parent.mkdir()
    disguised.write_bytes(pickle.dumps(_Exploit()))
    with pytest.raises(ckpt.UnsafeCheckpointError, match="pickle"):
        CLSTMPPO.load(disguised)
    assert not marker.exists()


def _steps(agent_updates: int, num_envs: int = 4) -> int:
    return agent_updates * ROLLOUT * num_envs


def test_learn_writes_latest_and_best_checkpoints_with_metrics(tmp_path) -> None:
    agent = CLSTMPPO(CountingEnv(), checkpoint_dir=str(tmp_path), **TINY)
    agent.learn(_steps(3))
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(f"{n}.safetensors" for n in ckpt.CHECKPOINT_NAMES)
    _, meta = ckpt.read_checkpoint(tmp_path / "best_composite.safetensors")
    assert meta["metrics"]["composite"] == agent.best["composite"]
    assert meta["metrics"]["episodes"] == 4
    assert set(agent.history[-1]) >= {"charts/SPS", "losses/approx_kl", "losses/clipfrac",
                                      "losses/entropy_pct_of_initial", "losses/policy_grad_norm",
                                      "losses/value_grad_norm", "losses/explained_variance",
                                      "critic/value_mc_corr", "charts/actor_learning_rate"}


MARKET = synthetic_market_tensors(days=3, minutes=40, seed=3, symbols=("A", "B"))
# Real envs with their own episode samplers and RNGs; episodes (39 bars, 13 snapshots) end off rollout boundaries.
REAL_ENVS: dict[str, Callable[[], Any]] = {
    "intraday": lambda: IntradayTradingEnv(MARKET, num_envs=4),
    "portfolio": lambda: PortfolioAllocationEnv(MARKET, num_envs=4),
    "options": lambda: OptionsTradingEnv(black_scholes_chain(days=2, seed=1), num_envs=4),
}


@pytest.mark.parametrize(("env_name", "stop"), [
    ("intraday", "sigterm_mid_rollout"), ("intraday", "latest_after_an_update"),
    ("portfolio", "latest_after_an_update"), ("options", "latest_after_an_update"),
])
def test_a_run_stopped_mid_episode_and_resumed_ends_like_the_straight_run(tmp_path, env_name: str, stop: str) -> None:
    make_env = REAL_ENVS[env_name]
    # The default LR annealing and entropy decay stay on: the resumed run must follow the same schedules.
    hparams = dict(TINY, seed=5, checkpoint_dir=str(tmp_path), checkpoint_every=2)
    total = _steps(6)  # a critic warm-up rollout, then five updates
    straight = CLSTMPPO(make_env(), **hparams | {"checkpoint_dir": None})
    straight.learn(total)

    first_env = make_env()
    if stop == "sigterm_mid_rollout":  # in the 5th rollout: the checkpoint holds the state after update 3
        steps, real_step = iter(range(1, 10**6)), first_env.step

        def step(actions: torch.Tensor):
            if next(steps) == 4 * ROLLOUT + 3:
                os.kill(os.getpid(), signal.SIGTERM)
            return real_step(actions)

        first_env.step = step
        with pytest.raises(SystemExit):
            CLSTMPPO(first_env, **hparams).learn(total)
    else:  # `latest` of a run that went on: written after update 4
        CLSTMPPO(first_env, **hparams).learn(total)
    tensors, meta = ckpt.read_checkpoint(tmp_path)
    assert meta["num_updates"] == (3 if stop == "sigterm_mid_rollout" else 4)
    assert bool((tensors["rollout.episode_length"] > 0).any()), "the checkpoint should fall mid-episode"

    resumed = CLSTMPPO.load(tmp_path, env=make_env())  # a fresh env: its state comes from the checkpoint
    resumed.learn(total - resumed.num_timesteps, reset_num_timesteps=False)
    assert resumed.num_updates == straight.num_updates == 5 and resumed.num_timesteps == total
    last, straight_last = resumed.history[-1], straight.history[-1]
    assert last["charts/actor_learning_rate"] == straight_last["charts/actor_learning_rate"] < TINY_LR
    assert last["charts/ent_coef"] == straight_last["charts/ent_coef"]
    for p, q in zip(straight.policy.parameters(), resumed.policy.parameters(), strict=True):
        torch.testing.assert_close(q, p, rtol=0, atol=0)


def test_resume_keeps_the_reward_scalers_discounted_return_and_old_checkpoints_still_load(tmp_path) -> None:
    agent = CLSTMPPO(CountingEnv(episode_length=5), checkpoint_dir=str(tmp_path / "run"), **TINY)
    agent.learn(_steps(2))  # 16 steps per env: episodes of 5 leave a running return at the checkpoint
    returns = agent.normalizer.state_dict()[RETURNS_KEY]
    assert returns.shape == (4,) and bool((returns != 0).all())
    resumed = CLSTMPPO.load(tmp_path / "run", env=CountingEnv(episode_length=5))
    torch.testing.assert_close(resumed.normalizer.state_dict()[RETURNS_KEY], returns, rtol=0, atol=0)

    tensors, meta = ckpt.read_checkpoint(tmp_path / "run")
    del tensors[f"normalizer.{RETURNS_KEY}"]  # a checkpoint written before the return was saved
    ckpt.write_checkpoint(tmp_path / "old.safetensors", tensors, meta)
    old = CLSTMPPO.load(tmp_path / "old.safetensors", env=CountingEnv(episode_length=5))
    assert old.normalizer.state_dict()[RETURNS_KEY].numel() == 0
    torch.testing.assert_close(old.normalizer.state_dict()["ret_var"], agent.normalizer.state_dict()["ret_var"])
    old.learn(_steps(1), reset_num_timesteps=False)
    assert old.num_updates == agent.num_updates + 1
    assert old.normalizer.state_dict()[RETURNS_KEY].shape == (4,)
    assert all(bool(torch.isfinite(p).all()) for p in old.policy.parameters())


def test_early_stopping_after_patience_updates_without_improvement() -> None:
    class FlatEnv(CountingEnv):
        def step(self, actions):
            obs, reward, term, trunc, info = super().step(actions)
            return obs, torch.ones_like(reward), term, trunc, info

    agent = CLSTMPPO(FlatEnv(), early_stop_patience=2, **TINY)
    agent.learn(_steps(20))
    assert agent.num_updates == 3  # first update sets the best, two more without improvement stop it
    assert agent.num_timesteps == _steps(4)


def test_sigterm_during_learn_saves_and_exits_zero_and_restores_the_handler(tmp_path) -> None:
    before = signal.getsignal(signal.SIGTERM)
    agent = CLSTMPPO(CountingEnv(sigterm_at=3 * ROLLOUT + 2), checkpoint_dir=str(tmp_path), **TINY)
    with pytest.raises(SystemExit) as exit_info:
        agent.learn(_steps(50))
    assert exit_info.value.code == 0
    assert signal.getsignal(signal.SIGTERM) is before
    _, meta = ckpt.read_checkpoint(tmp_path)
    assert meta["num_updates"] == 2  # the rollout cut short by SIGTERM is not trained on


def test_trainer_cli_exits_zero_on_sigterm_with_a_checkpoint(tmp_path) -> None:
    run = TrainingRun.build(GymData("CartPole-v1"), total_timesteps=10_000_000, preset="gpu_long", num_envs=2,
                            agent={"num_steps": 16, "hidden": 8, "window": 2, "verbose": 1, "torch_threads": 1,
                                   "checkpoint_dir": str(tmp_path / "ckpt")})
    path = run.replace(output_dir=str(tmp_path / "final")).save(tmp_path / "training_run.json")
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.training.trainer", str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for line in proc.stdout:
            if line.startswith("global_step="):
                break
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output
    assert "SIGTERM: saved" in output
    assert CLSTMPPO.load(tmp_path / "ckpt").num_updates >= 1


def test_nan_rewards_raise_training_diverged_and_keep_the_last_good_checkpoint(tmp_path) -> None:
    agent = CLSTMPPO(CountingEnv(nan_after=3 * ROLLOUT), checkpoint_dir=str(tmp_path), **TINY)
    with pytest.raises(TrainingDivergedError, match="NaN"):
        agent.learn(_steps(10))
    good = CLSTMPPO.load(tmp_path)
    assert good.num_updates == 2
    assert all(torch.isfinite(p).all() for p in good.policy.parameters())


def test_loading_to_act_leaves_the_callers_random_state_alone(tmp_path: Path) -> None:
    agent = CLSTMPPO(CountingEnv(), PPOConfig(**TINY, seed=3)).learn(2 * ROLLOUT * 4)
    agent.save(tmp_path / "agent.pt")

    def draws() -> tuple[float, float, float]:
        return random.random(), float(np.random.rand()), float(torch.rand(1))

    random.seed(11), np.random.seed(11), torch.manual_seed(11)
    expected = draws()
    random.seed(11), np.random.seed(11), torch.manual_seed(11)
    CLSTMPPO.load(tmp_path / "agent.pt")  # to act: the process's draws go on as if nothing was loaded
    assert draws() == expected
    # Resuming training does restore the run's own states: its draws are the saved run's, not the caller's.
    random.seed(11), np.random.seed(11), torch.manual_seed(11)
    CLSTMPPO.load(tmp_path / "agent.pt", env=CountingEnv())
    assert draws() != expected
