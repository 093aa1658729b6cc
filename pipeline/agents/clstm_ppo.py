"""CLSTMPPO: the SB3-style agent (construct, learn, predict, save, load) around the cascaded-LSTM actor-critic.

The training loop itself (rollout, GAE, PPO and critic epochs, diagnostics, checkpoints) is in `ppo_training.py`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.agents import checkpoints as ckpt
from pipeline.agents.distributed import broadcast_parameters, init_distributed, local_device
from pipeline.agents.network import CLSTMActorCritic, sample_actions
from pipeline.agents.ppo_config import PPOConfig
from pipeline.agents.rollout import ObsWindow
from pipeline.agents.seeding import set_seed
from pipeline.agents.vec_env import as_batched_env

FORMAT_VERSION = 1


class TrainingDivergedError(RuntimeError):
    """A loss or gradient became NaN/inf or exploded; the last good checkpoint was left as it was."""


def make_normalizer(obs_shape: tuple[int, ...], cfg: PPOConfig, device: torch.device) -> Any | None:
    """The envs' RunningNormalizer for obs and rewards, or None when both are switched off.

    Statistics are per feature (the last obs dim): the T rows of a window share them.
    """
    if not (cfg.normalize_obs or cfg.scale_rewards):
        return None
    from pipeline.envs.normalize import RunningNormalizer

    return RunningNormalizer(
        obs_shape[-1:], device=device, gamma=cfg.gamma, clip_obs=cfg.clip_obs, clip_reward=cfg.clip_reward
    )


def resolve_device(name: str) -> torch.device:
    """This rank's torch device for PPOConfig.device ("auto": CUDA where available, else CPU)."""
    return local_device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)


class CLSTMPPO:
    """Cascaded-LSTM PPO. `env`: a gymnasium id, gymnasium Env, gymnasium VectorEnv, or a native BatchedEnv."""

    def __init__(self, env: Any, **hparams: Any) -> None:
        cfg = PPOConfig.from_dict(hparams)
        device = resolve_device(cfg.device)
        batched = as_batched_env(env, cfg.num_envs, device)
        self._setup(cfg, device, batched, tuple(batched.obs_shape), int(batched.action_dim), bool(batched.discrete))

    def _setup(
        self, cfg: PPOConfig, device: torch.device, env: Any | None,
        obs_shape: tuple[int, ...], action_dim: int, discrete: bool,
    ) -> None:
        self.config = cfg
        self.device = device
        self.rank, self.world_size = init_distributed(device)
        if cfg.torch_threads:
            torch.set_num_threads(cfg.torch_threads)
        if device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        set_seed(cfg.seed + self.rank)
        # The agent's own RNG (action sampling, minibatch order): checkpointed, and independent of other
        # agents in the same process, so a resumed run draws exactly what the uninterrupted one would.
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(cfg.seed + self.rank)
        self.env = env
        self.obs_shape, self.action_dim, self.discrete = obs_shape, action_dim, discrete
        self.window_shape = ObsWindow(1, obs_shape, cfg.window, torch.device("cpu")).shape
        self.policy = CLSTMActorCritic(
            self.window_shape[-1], action_dim, discrete, cfg.hidden, cfg.encoder_layers, cfg.init_log_std
        ).to(device)
        self.policy.amp = cfg.amp
        broadcast_parameters(self.policy.parameters())
        self.actor_optimizer = torch.optim.Adam(self.policy.actor_parameters(), lr=cfg.actor_lr, eps=1e-5)
        self.critic_optimizer = torch.optim.Adam(self.policy.critic_parameters(), lr=cfg.critic_lr, eps=1e-5)
        self.normalizer = make_normalizer(obs_shape, cfg, device)
        if cfg.compile:
            for module in (self.policy.encoder, self.policy.actor.head, self.policy.critic.head):
                module.compile()
        # Training progress: all of it goes into checkpoints so that resume continues the same run.
        self.num_timesteps = 0
        self.num_updates = 0
        self.total_timesteps = 0
        self.critic_warmed_up = False
        self.initial_entropy: float | None = None
        self.best: dict[str, float] = {}
        self.updates_since_best = 0
        self.history: list[dict[str, Any]] = []
        self._rollout_state: dict[str, Any] | None = None

    # ----------------------------------------------------------------------------------------- training
    def learn(self, total_timesteps: int, reset_num_timesteps: bool = True) -> CLSTMPPO:
        """Train for `total_timesteps` env steps (added to the current count when reset_num_timesteps=False).

        SIGTERM during learn() writes `latest` to checkpoint_dir and exits with status 0; NaN or exploding
        losses raise TrainingDivergedError without touching existing checkpoints.
        """
        from pipeline.agents.ppo_training import run_training

        if self.env is None:
            raise ValueError("this agent has no environment; pass env= to CLSTMPPO.load(path, env=...) to train")
        if reset_num_timesteps:
            self.num_timesteps, self.num_updates, self.total_timesteps = 0, 0, int(total_timesteps)
        else:
            self.total_timesteps = self.num_timesteps + int(total_timesteps)
        run_training(self)
        return self

    # ---------------------------------------------------------------------------------------- inference
    def _windows(
        self, obs: Any, state: np.ndarray | None, episode_start: Any
    ) -> tuple[torch.Tensor, np.ndarray | None, bool]:
        x = torch.as_tensor(np.asarray(obs, dtype=np.float32), device=self.device)
        single = x.dim() == len(self.obs_shape)
        if single:
            x = x.unsqueeze(0)
        if tuple(x.shape[1:]) != self.obs_shape:
            raise ValueError(f"observation shape {tuple(x.shape[1:])} does not match the agent's {self.obs_shape}")
        if self.normalizer is not None and self.config.normalize_obs:
            x = self.normalizer.normalize_obs(x, update=False)
        if len(self.obs_shape) == 2:
            return x, state, single
        prev = (torch.zeros((x.shape[0], *self.window_shape), device=self.device) if state is None
                else torch.as_tensor(np.asarray(state, dtype=np.float32), device=self.device))
        if episode_start is not None:
            keep = ~torch.as_tensor(np.asarray(episode_start, dtype=bool).reshape(-1), device=self.device)
            prev = prev * keep.to(prev.dtype).view(-1, 1, 1)
        windows = torch.cat([prev[:, 1:], x.unsqueeze(1)], dim=1)
        return windows, windows.cpu().numpy(), single

    @torch.no_grad()
    def predict(
        self, obs: Any, state: np.ndarray | None = None, episode_start: Any = None, deterministic: bool = True
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Actions for `obs` (one obs or a batch). For 1-D observations `state` is the rolling window of the
        last T normalized obs (pass back what you got; episode_start=True rows forget it); windowed obs need none.
        Continuous spaces return the Gaussian mean when deterministic."""
        windows, new_state, single = self._windows(obs, state, episode_start)
        out = self.policy.actor_out(self.policy.shared(windows))
        actions = sample_actions(out, self.policy.log_std, deterministic, self.generator).cpu().numpy()
        return (actions[0] if single else actions), new_state

    @torch.no_grad()
    def action_probs(
        self, obs: Any, state: np.ndarray | None = None, episode_start: Any = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """(probabilities [n_envs, n_actions], state) for discrete action spaces (ensembles average these)."""
        if not self.discrete:
            raise ValueError("action_probs is defined for discrete action spaces; use predict() for continuous ones")
        windows, new_state, _ = self._windows(obs, state, episode_start)
        probs = torch.softmax(self.policy.actor_out(self.policy.shared(windows)), dim=-1)
        return probs.cpu().numpy(), new_state

    # ------------------------------------------------------------------------------------- persistence
    def checkpoint_payload(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Everything needed to resume: weights, optimizers, normalizer, RNG, progress counters."""
        tensors = {f"policy.{k}": v for k, v in self.policy.state_dict().items()}
        if self.normalizer is not None:
            tensors.update({f"normalizer.{k}": v for k, v in self.normalizer.state_dict().items()})
        actor_t, actor_m = ckpt.optimizer_to_flat("optim.actor", self.actor_optimizer)
        critic_t, critic_m = ckpt.optimizer_to_flat("optim.critic", self.critic_optimizer)
        rng_t, rng_m = ckpt.rng_to_flat()
        tensors.update(actor_t | critic_t | rng_t)
        tensors["rng.agent"] = self.generator.get_state()
        meta = {
            "format_version": FORMAT_VERSION,
            "config": self.config.to_dict(),
            "obs_shape": list(self.obs_shape),
            "action_dim": self.action_dim,
            "discrete": self.discrete,
            "window_shape": list(self.window_shape),
            "num_timesteps": self.num_timesteps,
            "num_updates": self.num_updates,
            "total_timesteps": self.total_timesteps,
            "critic_warmed_up": self.critic_warmed_up,
            "initial_entropy": self.initial_entropy,
            "best": self.best,
            "updates_since_best": self.updates_since_best,
            "optim": {"actor": actor_m, "critic": critic_m},
            "rng": rng_m,
        }
        return tensors, meta

    def save(self, path: str | os.PathLike) -> Path:
        """Write a checkpoint file (`.safetensors` appended if missing); returns its path."""
        tensors, meta = self.checkpoint_payload()
        return ckpt.write_checkpoint(path, tensors, meta)

    @classmethod
    def load(cls, path: str | os.PathLike, env: Any = None, **overrides: Any) -> CLSTMPPO:
        """Load a checkpoint file or folder (its `latest`). With `env`, training can resume with learn(...,
        reset_num_timesteps=False); `overrides` replace saved hyperparameters (e.g. device)."""
        tensors, meta = ckpt.read_checkpoint(path)
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"checkpoint format {meta.get('format_version')} is not {FORMAT_VERSION}")
        cfg = PPOConfig.from_dict({**meta["config"], **overrides})
        device = resolve_device(cfg.device)
        agent = cls.__new__(cls)
        batched = as_batched_env(env, cfg.num_envs, device) if env is not None else None
        agent._setup(cfg, device, batched, tuple(meta["obs_shape"]), int(meta["action_dim"]), bool(meta["discrete"]))
        if batched is not None and tuple(batched.obs_shape) != agent.obs_shape:
            raise ValueError(f"env obs shape {batched.obs_shape} differs from the checkpoint's {agent.obs_shape}")
        agent.policy.load_state_dict({k[7:]: v for k, v in tensors.items() if k.startswith("policy.")})
        if agent.normalizer is not None:
            agent.normalizer.load_state_dict(
                {k[11:]: v.to(device) for k, v in tensors.items() if k.startswith("normalizer.")}
            )
        ckpt.optimizer_from_flat("optim.actor", agent.actor_optimizer, tensors, meta["optim"]["actor"])
        ckpt.optimizer_from_flat("optim.critic", agent.critic_optimizer, tensors, meta["optim"]["critic"])
        ckpt.rng_from_flat(tensors, meta["rng"])
        agent.generator.set_state(tensors["rng.agent"])
        for key in ("num_timesteps", "num_updates", "total_timesteps", "critic_warmed_up",
                    "initial_entropy", "best", "updates_since_best"):
            setattr(agent, key, meta[key])
        return agent
