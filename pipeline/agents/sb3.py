"""Stable-baselines3 baselines: PPO (discrete envs) and SAC (continuous, e.g. the portfolio env).

`train_baseline(env_id, path, config)` trains on a registered gymnasium id with Monitor + VecNormalize and writes
a folder: `model.zip` (SB3's own format; its cloudpickled entries are never loaded, the spaces come back from
`baseline.json`), `vecnormalize.safetensors` + `vecnormalize.json` (see baselines_vecnorm; no pickle),
`baseline.json` (algo, env id and kwargs, spaces, training summary).
`load_baseline(path)` returns a `BaselinePolicy` with `predict` and, for discrete actions, `action_probs`.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import stable_baselines3
import torch
from stable_baselines3 import PPO, SAC
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

from pipeline.agents.sb3_vecnorm import load_vecnormalize, save_vecnormalize

ALGOS: dict[str, type[BaseAlgorithm]] = {"ppo": PPO, "sac": SAC}
MODEL_FILE = "model.zip"
META_FILE = "baseline.json"


@dataclass
class BaselineConfig:
    """How a baseline is trained."""

    algo: str = "ppo"
    """'ppo' (discrete or continuous actions) or 'sac' (continuous only)."""
    total_timesteps: int = 50_000
    """Environment steps over all parallel envs."""
    num_envs: int = 1
    """Parallel copies of the env (DummyVecEnv, each wrapped in Monitor): a baseline is built from a gymnasium
    id, so this is where its count lives (the same name as PPOConfig.num_envs)."""
    seed: int = 0
    """Seeds the model, the envs and the action sampling."""
    gamma: float = 0.99
    """Discount of the algorithm and of VecNormalize's return scaling."""
    norm_obs: bool = True
    norm_reward: bool = True
    clip_obs: float = 10.0
    clip_reward: float = 10.0
    hparams: dict[str, Any] = field(default_factory=dict)
    """Extra keyword arguments of the SB3 constructor (n_steps, batch_size, policy_kwargs, ...)."""


@dataclass(frozen=True)
class PPOParams:
    """The SB3 PPO constructor arguments a run may set; unset ones keep SB3's defaults."""

    learning_rate: float | None = None
    """Adam step size (SB3: 3e-4)."""
    n_steps: int | None = None
    """Rollout length per env before each update (SB3: 2048)."""
    batch_size: int | None = None
    """Minibatch size (SB3: 64)."""
    n_epochs: int | None = None
    """Epochs over each rollout (SB3: 10)."""
    gae_lambda: float | None = None
    """GAE lambda (SB3: 0.95)."""
    clip_range: float | None = None
    """PPO ratio clip (SB3: 0.2)."""
    ent_coef: float | None = None
    """Entropy bonus (SB3: 0.0)."""
    net_width: int | None = None
    """Units of each of the two hidden layers of the policy and value nets (SB3: 64)."""

    def hparams(self) -> dict[str, Any]:
        """The constructor keywords of the fields that are set."""
        return _constructor_args(self)


@dataclass(frozen=True)
class SACParams:
    """The SB3 SAC constructor arguments a run may set; unset ones keep SB3's defaults."""

    learning_rate: float | None = None
    """Adam step size of actor, critics and temperature (SB3: 3e-4)."""
    buffer_size: int | None = None
    """Replay buffer transitions (SB3: 1,000,000)."""
    learning_starts: int | None = None
    """Env steps collected before the first gradient step (SB3: 100)."""
    batch_size: int | None = None
    """Minibatch size (SB3: 256)."""
    tau: float | None = None
    """Soft update coefficient of the target critics (SB3: 0.005)."""
    gradient_steps: int | None = None
    """Gradient steps per env step collected (SB3: 1)."""
    net_width: int | None = None
    """Units of each of the two hidden layers of the actor and critics (SB3: 256)."""

    def hparams(self) -> dict[str, Any]:
        """The constructor keywords of the fields that are set."""
        return _constructor_args(self)


def _constructor_args(params: PPOParams | SACParams) -> dict[str, Any]:
    values = {k: v for k, v in asdict(params).items() if v is not None}
    width = values.pop("net_width", None)
    return values | ({"policy_kwargs": {"net_arch": [width, width]}} if width else {})


class BaselinePolicy:
    """A trained SB3 model plus frozen VecNormalize statistics: raw observations in, actions out."""

    def __init__(self, model: BaseAlgorithm, vec_normalize: VecNormalize, meta: dict[str, Any]) -> None:
        self.model = model
        self.vec_normalize = vec_normalize
        self.meta = meta
        self.observation_space = model.observation_space
        self.action_space = model.action_space
        self.discrete = isinstance(self.action_space, gym.spaces.Discrete)

    def _batch(self, obs: Any) -> tuple[np.ndarray, bool]:
        obs = np.asarray(obs, dtype=np.float32)
        single = obs.shape == self.observation_space.shape
        return (obs[None] if single else obs), single

    def normalize_obs(self, obs: Any) -> np.ndarray:
        """Observations as the model sees them (normalized and clipped with the training statistics)."""
        batch, _ = self._batch(obs)
        return self.vec_normalize.normalize_obs(batch)

    def predict(self, obs: Any, state: Any = None, episode_start: Any = None,
                deterministic: bool = True) -> tuple[np.ndarray, None]:
        """(action, None), SB3-style; a single obs gives a single action, a batch gives a batch."""
        batch, single = self._batch(obs)
        actions, _ = self.model.predict(self.vec_normalize.normalize_obs(batch), deterministic=deterministic)
        return (actions[0] if single else actions), None

    def action_probs(self, obs: Any, state: Any = None, episode_start: Any = None) -> np.ndarray:
        """Action probabilities [n, n_actions] of a discrete policy."""
        if not self.discrete:
            raise ValueError("action_probs needs a discrete action space; use predict() for continuous actions")
        batch, _ = self._batch(obs)
        obs_tensor, _ = self.model.policy.obs_to_tensor(self.vec_normalize.normalize_obs(batch))
        with torch.no_grad():
            dist = self.model.policy.get_distribution(obs_tensor)
        return dist.distribution.probs.cpu().numpy()


def space_to_json(space: gym.Space) -> dict[str, Any]:
    """A Box or Discrete space as plain JSON (SB3 would cloudpickle it)."""
    if isinstance(space, gym.spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, gym.spaces.Box):
        return {"type": "Box", "low": space.low.tolist(), "high": space.high.tolist(), "shape": list(space.shape),
                "dtype": str(space.dtype)}
    raise ValueError(f"baselines support Box and Discrete spaces, got {space}; flatten or wrap the env's spaces")


def space_from_json(spec: dict[str, Any]) -> gym.Space:
    """Inverse of `space_to_json`."""
    if spec["type"] == "Discrete":
        return gym.spaces.Discrete(spec["n"], start=spec["start"])
    dtype = np.dtype(spec["dtype"])
    low, high = (np.asarray(spec[k], dtype=dtype).reshape(spec["shape"]) for k in ("low", "high"))
    return gym.spaces.Box(low, high, shape=tuple(spec["shape"]), dtype=dtype)


def _refuse_other_pickles(model_zip: Path, custom: dict[str, Any]) -> None:
    """Fail, instead of unpickling, if the zip's JSON holds a cloudpickled entry that `custom` does not replace."""
    with zipfile.ZipFile(model_zip) as archive:
        data = json.loads(archive.read("data"))
    pickled = sorted(k for k, v in data.items() if isinstance(v, dict) and ":serialized:" in v and k not in custom)
    if pickled:
        raise ValueError(f"{model_zip} holds pickled entries {pickled} that load_baseline does not know how to "
                         "rebuild; refusing to unpickle them (retrain with train_baseline)")


def _check_algo(algo: str, action_space: gym.Space) -> type[BaseAlgorithm]:
    if algo not in ALGOS:
        raise ValueError(f"algo={algo!r} is not a baseline; use one of {sorted(ALGOS)}")
    if algo == "sac" and not isinstance(action_space, gym.spaces.Box):
        raise ValueError(f"SAC needs a continuous (Box) action space, the env has {action_space}; use algo='ppo'")
    return ALGOS[algo]


def train_baseline(env_id: str, path: str | Path, config: BaselineConfig | None = None,
                   env_kwargs: dict[str, Any] | None = None) -> BaselinePolicy:
    """Train on `gym.make(env_id, **env_kwargs)` with Monitor + VecNormalize, save to `path`, return the policy."""
    cfg = config or BaselineConfig()
    env_kwargs = dict(env_kwargs or {})
    venv = make_vec_env(env_id, n_envs=cfg.num_envs, seed=cfg.seed, env_kwargs=env_kwargs)
    algo_cls = _check_algo(cfg.algo, venv.action_space)
    vec_normalize = VecNormalize(venv, norm_obs=cfg.norm_obs, norm_reward=cfg.norm_reward, clip_obs=cfg.clip_obs,
                                 clip_reward=cfg.clip_reward, gamma=cfg.gamma)
    model = algo_cls("MlpPolicy", vec_normalize, gamma=cfg.gamma, seed=cfg.seed, device="cpu", verbose=0,
                     **cfg.hparams)
    model.learn(total_timesteps=cfg.total_timesteps)
    vec_normalize.training = False  # freeze: the saved stats are the ones the returned policy uses
    episode_returns = [float(e["r"]) for e in model.ep_info_buffer]
    meta = {
        "algo": cfg.algo, "env_id": env_id, "env_kwargs": env_kwargs, "config": asdict(cfg),
        "spaces": {"observation": space_to_json(venv.observation_space), "action": space_to_json(venv.action_space)},
        "discrete": isinstance(venv.action_space, gym.spaces.Discrete),
        "obs_shape": list(venv.observation_space.shape),
        "n_actions": int(venv.action_space.n) if isinstance(venv.action_space, gym.spaces.Discrete) else None,
        "action_dim": None if isinstance(venv.action_space, gym.spaces.Discrete) else int(venv.action_space.shape[0]),
        "num_timesteps": int(model.num_timesteps),
        # The last update's diagnostics (SB3 keeps them until its next log dump), named as CLSTM-PPO's.
        "last": {f"losses/{k.removeprefix('train/')}": float(v) for k, v in model.logger.name_to_value.items()
                 if k.startswith("train/")},
        "mean_episode_return": float(np.mean(episode_returns)) if episode_returns else None,
        "sb3_version": stable_baselines3.__version__,
    }
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.save(path / MODEL_FILE)
    save_vecnormalize(vec_normalize, path)
    (path / META_FILE).write_text(json.dumps(meta, indent=2))
    return BaselinePolicy(model, vec_normalize, meta)


class _SpacesOnlyVecEnv(VecEnv):
    """A VecEnv that only carries spaces: VecNormalize needs one to wrap, inference needs no simulator."""

    def __init__(self, observation_space: gym.Space, action_space: gym.Space) -> None:
        super().__init__(1, observation_space, action_space)

    def _no_simulator(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("this VecEnv holds spaces only; pass env= to load_baseline to step a real env")

    reset = step_async = step_wait = set_attr = env_method = _no_simulator

    def get_attr(self, attr_name: str, indices: Any = None) -> list[Any]:
        return [None]  # only asked for render_mode, which a spaces-only env does not have

    def env_is_wrapped(self, wrapper_class: type, indices: Any = None) -> list[bool]:
        return [False]

    def close(self) -> None:
        return None


def load_baseline(path: str | Path, env: VecEnv | None = None) -> BaselinePolicy:
    """Load a folder written by train_baseline; `env` (optional) is wrapped by the inference VecNormalize."""
    path = Path(path)
    meta_path = path / META_FILE
    if not meta_path.exists():
        raise FileNotFoundError(f"{path} has no {META_FILE}; is it a folder written by train_baseline()?")
    meta = json.loads(meta_path.read_text())
    algo_cls = ALGOS[meta["algo"]]
    if "spaces" not in meta:
        raise ValueError(f"{meta_path} has no 'spaces' entry (written by an older train_baseline); retrain the "
                         "baseline, since loading its spaces from model.zip would unpickle them")
    # SB3 cloudpickles these into the zip's JSON; giving each one here means nothing from the file is unpickled.
    # Schedules, buffer classes, train_freq and the last rollout's state only matter to keep training, which a
    # loaded baseline does not.
    custom: dict[str, Any] = {
        "policy_class": algo_cls.policy_aliases["MlpPolicy"],
        "observation_space": space_from_json(meta["spaces"]["observation"]),
        "action_space": space_from_json(meta["spaces"]["action"]),
        "learning_rate": 0.0, "lr_schedule": lambda _: 0.0, "clip_range": lambda _: 0.0,
        "rollout_buffer_class": None, "replay_buffer_class": None, "train_freq": (1, "step"),
        **dict.fromkeys(("_last_obs", "_last_original_obs", "_last_episode_starts", "ep_info_buffer",
                         "ep_success_buffer")),
    }
    _refuse_other_pickles(path / MODEL_FILE, custom)
    model = algo_cls.load(path / MODEL_FILE, device="cpu", custom_objects=custom)
    venv = env if env is not None else _SpacesOnlyVecEnv(model.observation_space, model.action_space)
    return BaselinePolicy(model, load_vecnormalize(path, venv), meta)
