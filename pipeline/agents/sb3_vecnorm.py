"""VecNormalize statistics as safetensors + JSON, never pickle.

SB3's `VecNormalize.save/load` pickle the whole wrapper; a pickle from disk can run code on load. Here the
running statistics (obs mean/var/count, return mean/var/count) go to `vecnormalize.safetensors` and the settings
(clip_obs, clip_reward, gamma, epsilon, norm flags) to `vecnormalize.json`; loading rebuilds a VecNormalize for
inference (training=False, norm_reward=False) from them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

STATS_FILE = "vecnormalize.safetensors"
SETTINGS_FILE = "vecnormalize.json"


def save_vecnormalize(vec_normalize: VecNormalize, directory: str | Path) -> tuple[Path, Path]:
    """Write the wrapper's statistics and settings into `directory`; returns (stats path, settings path)."""
    if isinstance(vec_normalize.obs_rms, dict):
        raise ValueError("dict observation spaces are not supported here; flatten the observation first")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    obs, ret = vec_normalize.obs_rms, vec_normalize.ret_rms
    tensors = {
        "obs_rms.mean": np.asarray(obs.mean, np.float64), "obs_rms.var": np.asarray(obs.var, np.float64),
        "obs_rms.count": np.asarray(obs.count, np.float64),
        "ret_rms.mean": np.asarray(ret.mean, np.float64), "ret_rms.var": np.asarray(ret.var, np.float64),
        "ret_rms.count": np.asarray(ret.count, np.float64),
    }
    settings: dict[str, Any] = {
        "clip_obs": float(vec_normalize.clip_obs), "clip_reward": float(vec_normalize.clip_reward),
        "gamma": float(vec_normalize.gamma), "epsilon": float(vec_normalize.epsilon),
        "norm_obs": bool(vec_normalize.norm_obs), "norm_reward": bool(vec_normalize.norm_reward),
        "obs_shape": list(np.shape(obs.mean)),
    }
    stats_path, settings_path = directory / STATS_FILE, directory / SETTINGS_FILE
    save_file(tensors, str(stats_path))
    settings_path.write_text(json.dumps(settings, indent=2))
    return stats_path, settings_path


def load_vecnormalize(directory: str | Path, venv: VecEnv) -> VecNormalize:
    """A VecNormalize around `venv` with the saved statistics, frozen for inference (no updates, raw rewards)."""
    directory = Path(directory)
    stats_path, settings_path = directory / STATS_FILE, directory / SETTINGS_FILE
    if not stats_path.exists() or not settings_path.exists():
        raise FileNotFoundError(f"{directory} lacks {STATS_FILE} / {SETTINGS_FILE}; save with save_vecnormalize()")
    settings = json.loads(settings_path.read_text())
    stats = load_file(str(stats_path))
    if tuple(settings["obs_shape"]) != tuple(venv.observation_space.shape):
        raise ValueError(f"saved stats are for obs shape {tuple(settings['obs_shape'])}, the env has "
                         f"{venv.observation_space.shape}; load them with the env they were trained on")
    vec_normalize = VecNormalize(
        venv, training=False, norm_obs=settings["norm_obs"], norm_reward=False, clip_obs=settings["clip_obs"],
        clip_reward=settings["clip_reward"], gamma=settings["gamma"], epsilon=settings["epsilon"],
    )
    vec_normalize.obs_rms.mean, vec_normalize.obs_rms.var = stats["obs_rms.mean"], stats["obs_rms.var"]
    vec_normalize.obs_rms.count = float(stats["obs_rms.count"])
    vec_normalize.ret_rms.mean, vec_normalize.ret_rms.var = stats["ret_rms.mean"], stats["ret_rms.var"]
    vec_normalize.ret_rms.count = float(stats["ret_rms.count"])
    return vec_normalize
