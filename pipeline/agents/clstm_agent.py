"""The cascaded-LSTM agent's state, inference and checkpoints; `CLSTMPPO` (clstm_ppo.py) adds the training loop.

A checkpoint holds everything a resumed run needs: weights, optimizers, normalizer, progress, every RNG, and
where the envs stand (the env's own state and the rollout state, for envs that can save theirs), so a run
stopped mid-episode and resumed ends where the straight run does. Safetensors + JSON, nothing pickled.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Self

import numpy as np
import torch

from pipeline.agents import checkpoints as ckpt
from pipeline.agents.distributed import broadcast_parameters, init_distributed, local_device
from pipeline.agents.network import CLSTMActorCritic, sample_actions
from pipeline.agents.normalize import RunningNormalizer
from pipeline.agents.ppo_config import PPOConfig
from pipeline.agents.ppo_update import Optimizers
from pipeline.agents.rollout import ObsWindow, RolloutState
from pipeline.agents.seeding import global_rng_preserved, set_seed
from pipeline.agents.vec_env import as_batched_env
from pipeline.envs.base import ResumableEnv, substate

FORMAT_VERSION = 1
PROGRESS_KEYS = ("num_timesteps", "num_updates", "total_timesteps", "critic_warmed_up", "initial_entropy", "best",
                 "updates_since_best")
RunState = tuple[dict[str, torch.Tensor], dict[str, Any]]
"""A checkpoint's tensors (for safetensors) and its JSON metadata."""


def resolve_device(name: str) -> torch.device:
    """This rank's torch device for PPOConfig.device ("auto": CUDA where available, else CPU)."""
    return local_device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)


def initial_action_probs(setting: str | list, env: Any) -> list[float] | None:
    """The starting action distribution `PPOConfig.initial_action_probs` asks for (None: uniform, the network's
    own initialization). "env" reads the env's `initial_action_probs`; an env without one (or no env, as when a
    checkpoint is loaded over the weights) starts uniform."""
    if setting == "uniform":
        return None
    if setting == "env":
        probs = getattr(env, "initial_action_probs", None)
        return None if probs is None else [float(p) for p in probs]
    return [float(p) for p in setting]


class CLSTMAgent:
    """Cascaded-LSTM actor-critic with its normalizer, optimizers, RNG, progress and envs.

    `env`: a gymnasium id, gymnasium Env, gymnasium VectorEnv, or a native BatchedEnv. `config` is a PPOConfig;
    keywords override its fields, `CLSTMPPO(env, seed=0, num_envs=8)`.
    """

    def __init__(self, env: Any, config: PPOConfig | None = None, **overrides: Any) -> None:
        if config is not None and not isinstance(config, PPOConfig):
            raise TypeError(f"config must be a PPOConfig, got {type(config).__name__}; pass hyperparameters as "
                            "keywords (CLSTMPPO(env, seed=0)) or build PPOConfig.from_dict(...)")
        cfg = (config or PPOConfig()).replace(**overrides)
        device = resolve_device(cfg.device)
        batched = as_batched_env(env, cfg.num_envs, device)
        self._setup(cfg.replace(num_envs=batched.num_envs), device, batched, tuple(batched.obs_shape),
                    int(batched.action_dim), bool(batched.discrete))
        # Every rank starts from rank 0's fresh weights. Not in _setup: a loaded model has the file's weights on
        # every rank, and rank 0 alone loads one after training (to validate the saved model) when the other ranks
        # have left, so a collective there would wait for ranks that are gone.
        broadcast_parameters(self.policy.parameters())

    def _setup(
        self, cfg: PPOConfig, device: torch.device, env: Any | None,
        obs_shape: tuple[int, ...], action_dim: int, discrete: bool,
    ) -> None:
        self.config, self.device, self.env = cfg, device, env
        self.rank, self.world_size = init_distributed(device)
        if device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        set_seed(cfg.seed + self.rank)
        # The agent's own RNG (action sampling, minibatch order): checkpointed, and independent of other
        # agents in the same process, so a resumed run draws exactly what the uninterrupted one would.
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(cfg.seed + self.rank)
        self.obs_shape, self.action_dim, self.discrete = obs_shape, action_dim, discrete
        self.window_shape = ObsWindow(1, obs_shape, cfg.window, device).shape
        self.policy = CLSTMActorCritic(
            self.window_shape[-1], action_dim, discrete, cfg.hidden, cfg.encoder_layers, cfg.init_log_std
        ).to(device)
        probs = initial_action_probs(cfg.initial_action_probs, env) if discrete else None
        if probs is not None:
            self.policy.set_initial_action_probs(probs)
        self.policy.amp = cfg.amp
        # Fused Adam: the same update as the per-tensor loop (up to float rounding) in one kernel per parameter.
        fused = device.type in ("cpu", "cuda")
        self.optimizers = Optimizers(
            torch.optim.Adam(self.policy.actor_parameters(), lr=cfg.actor_lr, eps=1e-5, fused=fused),
            torch.optim.Adam(self.policy.critic_parameters(), lr=cfg.critic_lr, eps=1e-5, fused=fused),
        )
        # Statistics per feature (the last obs dim): the T rows of a window share them.
        self.normalizer = RunningNormalizer(obs_shape[-1:], device=device, gamma=cfg.gamma, clip_obs=cfg.clip_obs,
                                            clip_reward=cfg.clip_reward, norm_obs=cfg.normalize_obs,
                                            norm_reward=cfg.scale_rewards)
        if cfg.compile:
            for module in (self.policy.encoder, self.policy.actor.head, self.policy.critic.head):
                module.compile()
        # Training progress (PROGRESS_KEYS): all of it goes into checkpoints so that resume continues the same run.
        self.num_timesteps = self.num_updates = self.total_timesteps = 0
        self.critic_warmed_up = False
        self.initial_entropy: float | None = None
        self.best: dict[str, float] = {}
        self.best_source = "training_episodes"
        """What `best` and the best_* checkpoints were scored on: "training_episodes" or "validation"."""
        self.updates_since_best = 0
        self.history: list[dict[str, Any]] = []
        self.rollout_state: RolloutState | None = None

    # ---------------------------------------------------------------------------------------- inference
    def _windows(self, obs: Any, state: np.ndarray | None, episode_start: Any) -> tuple[torch.Tensor, Any, bool]:
        # A batched env's tensors (on any device) pass straight through; anything else goes through numpy.
        x = obs.to(self.device, torch.float32) if torch.is_tensor(obs) else torch.as_tensor(
            np.asarray(obs, dtype=np.float32), device=self.device)
        single = x.dim() == len(self.obs_shape)
        x = x.unsqueeze(0) if single else x
        if tuple(x.shape[1:]) != self.obs_shape:
            raise ValueError(f"observation shape {tuple(x.shape[1:])} does not match the agent's {self.obs_shape}")
        window = ObsWindow(x.shape[0], self.obs_shape, self.config.window, self.device)
        if state is not None and window.rolling:  # windowed (T, F) obs carry no state; ignore one passed back
            window.windows = torch.as_tensor(np.asarray(state, dtype=np.float32), device=self.device)
        start = None if episode_start is None else torch.as_tensor(
            np.asarray(episode_start, dtype=bool).reshape(-1), device=self.device)
        windows = window.push(self.normalizer.normalize_obs(x, update=False), start)
        return windows, (windows.cpu().numpy() if window.rolling else state), single

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
    def _run_state(self) -> RunState:
        """What a rollout changes (copies): normalizer, every RNG, the env's state and the rollout state.

        The env's state is only there for envs that can save it (ResumableEnv); others restart from a reset."""
        tensors = {f"normalizer.{k}": v.clone() for k, v in self.normalizer.state_dict().items()}
        rng_t, rng_m = ckpt.rng_to_flat()
        tensors |= rng_t | {"rng.agent": self.generator.get_state()}
        meta: dict[str, Any] = {"rng": rng_m}
        if isinstance(self.env, ResumableEnv) and self.rollout_state is not None:
            tensors |= {f"env.{k}": v for k, v in self.env.state_dict().items()}  # copies, by the protocol
            tensors |= {f"rollout.{k}": v for k, v in self.rollout_state.state_dict().items()}
            meta["rollout_num_envs"] = self.env.num_envs
        return tensors, meta

    def checkpoint_payload(self, run_state: RunState | None = None) -> RunState:
        """Everything needed to resume: weights, optimizers, progress, and `run_state` (default: the state now)."""
        tensors, meta = run_state if run_state is not None else self._run_state()
        tensors = dict(tensors) | {f"policy.{k}": v for k, v in self.policy.state_dict().items()}
        actor_t, actor_m = ckpt.optimizer_to_flat("optim.actor", self.optimizers.actor)
        critic_t, critic_m = ckpt.optimizer_to_flat("optim.critic", self.optimizers.critic)
        tensors |= actor_t | critic_t
        meta = {**meta, "format_version": FORMAT_VERSION, "config": self.config.to_dict(),
                "obs_shape": list(self.obs_shape), "action_dim": self.action_dim, "discrete": self.discrete,
                "window_shape": list(self.window_shape), "optim": {"actor": actor_m, "critic": critic_m},
                "best_source": self.best_source, **{key: getattr(self, key) for key in PROGRESS_KEYS}}
        return tensors, meta

    def save(self, path: str | os.PathLike) -> Path:
        """Write a checkpoint file (`.safetensors` appended if missing); returns its path."""
        tensors, meta = self.checkpoint_payload()
        return ckpt.write_checkpoint(path, tensors, meta)

    @classmethod
    def load(cls, path: str | os.PathLike, env: Any = None, **overrides: Any) -> Self:
        """Load a checkpoint file or folder (its `latest`). With `env`, training resumes with learn(...,
        reset_num_timesteps=False) from where the checkpoint's envs stood (when `env` can load that state and has
        as many envs); `overrides` replace saved hyperparameters (e.g. device)."""
        tensors, meta = ckpt.read_checkpoint(path)
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"checkpoint format {meta.get('format_version')} is not {FORMAT_VERSION}")
        cfg = PPOConfig.from_dict(meta["config"]).replace(**overrides)
        device = resolve_device(cfg.device)
        batched = as_batched_env(env, cfg.num_envs, device) if env is not None else None
        if batched is not None and tuple(batched.obs_shape) != tuple(meta["obs_shape"]):
            raise ValueError(f"env obs shape {batched.obs_shape} differs from the checkpoint's {meta['obs_shape']}")
        agent = cls.__new__(cls)
        # Resuming training restores the run's global RNG states, so it draws what the uninterrupted run would;
        # loading to act (no env) leaves the caller's states as they were.
        with nullcontext() if batched is not None else global_rng_preserved():
            agent._setup(cfg, device, batched, tuple(meta["obs_shape"]), int(meta["action_dim"]),
                         bool(meta["discrete"]))
            agent._restore(tensors, meta)
        return agent

    def _restore(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        self.policy.load_state_dict(substate(tensors, "policy."))
        if substate(tensors, "normalizer."):  # checkpoints of runs with both normalizations off had none
            self.normalizer.load_state_dict(substate(tensors, "normalizer."))
        ckpt.optimizer_from_flat("optim.actor", self.optimizers.actor, tensors, meta["optim"]["actor"])
        ckpt.optimizer_from_flat("optim.critic", self.optimizers.critic, tensors, meta["optim"]["critic"])
        ckpt.rng_from_flat(tensors, meta["rng"])
        self.generator.set_state(tensors["rng.agent"])
        for key in PROGRESS_KEYS:
            setattr(self, key, meta[key])
        # Checkpoints written before validation existed scored their best on training episodes.
        self.best_source = meta.get("best_source", "training_episodes")
        env = self.env
        if isinstance(env, ResumableEnv) and meta.get("rollout_num_envs") == env.num_envs:
            env.load_state_dict(substate(tensors, "env."))  # the env moves them to its own device
            self.rollout_state = RolloutState.from_state_dict(
                substate(tensors, "rollout."), self.obs_shape, self.config.window, self.device)
