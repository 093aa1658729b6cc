"""Running normalization of observations and rewards on the device, saved as safetensors (no pickle).

Each half can be switched off (`norm_obs`, `norm_reward`, as SB3's VecNormalize): it then passes values through
and keeps no statistics. Observations: running mean/variance merged batch by batch (Chan et al.'s parallel Welford update), then
(obs - mean) / sqrt(var + eps) clipped to +-clip_obs. Rewards: divided by the running std of the discounted
return of each env (as SB3's VecNormalize), clipped to +-clip_reward; the return restarts where an episode ended.

The per-env discounted return is part of the state (`discounted_return`, shape [num_envs]), so a resumed run
continues it instead of restarting every env's return at 0. It belongs to particular envs' episodes: when the
first rewards after a load come from a different number of envs, it restarts at 0 for all of them (the return
statistics ret_mean/ret_var/ret_count are kept). State written before it existed loads with the return at 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

_CONFIG_KEYS = ("gamma", "epsilon", "clip_obs", "clip_reward")
_STAT_KEYS = ("obs_mean", "obs_var", "obs_count", "ret_mean", "ret_var", "ret_count")
RETURNS_KEY = "discounted_return"
"""State key of the per-env discounted return ([num_envs]; [0] before the first reward). Optional on load."""


class RunningMeanStd:
    """Mean, variance and count of a stream of batches whose trailing dims are `shape`."""

    def __init__(self, shape: Sequence[int], device: torch.device | str, dtype: torch.dtype) -> None:
        self.shape = tuple(shape)
        self.mean = torch.zeros(self.shape, device=device, dtype=dtype)
        self.var = torch.ones(self.shape, device=device, dtype=dtype)
        self.count = torch.zeros((), device=device, dtype=dtype)

    def update(self, batch: torch.Tensor) -> None:
        x = batch.to(self.mean.dtype).reshape(-1, *self.shape)
        n = float(x.shape[0])  # a Python number: no host-to-device copy per update
        batch_mean = x.mean(dim=0)
        batch_var = x.var(dim=0, unbiased=False)
        total = self.count + n
        delta = batch_mean - self.mean
        m2 = self.var * self.count + batch_var * n + delta.square() * self.count * n / total
        self.mean = self.mean + delta * n / total
        self.var = m2 / total
        self.count = total


class RunningNormalizer:
    """Observation and reward normalization with running statistics, on any device.

    `shape` is the shape the statistics cover: the trailing dims of each observation. For window observations
    [T, F], `shape=(F,)` shares one mean/var per feature across the T rows, `shape=(T, F)` keeps them apart.
    """

    def __init__(
        self,
        shape: Sequence[int],
        device: torch.device | str = "cpu",
        gamma: float = 0.99,
        epsilon: float = 1e-8,
        clip_obs: float = 10.0,
        clip_reward: float = 10.0,
        norm_obs: bool = True,
        norm_reward: bool = True,
    ) -> None:
        self.device = torch.device(device)
        # float64 statistics keep long runs exact enough; MPS has no float64.
        dtype = torch.float32 if self.device.type == "mps" else torch.float64
        self.obs_rms = RunningMeanStd(shape, self.device, dtype)
        self.ret_rms = RunningMeanStd((), self.device, dtype)
        self.gamma, self.epsilon, self.clip_obs, self.clip_reward = gamma, epsilon, clip_obs, clip_reward
        self.norm_obs, self.norm_reward = norm_obs, norm_reward
        self._returns: torch.Tensor | None = None

    def normalize_obs(self, obs: torch.Tensor, update: bool) -> torch.Tensor:
        """Normalized float32 obs; `update=True` (training rollouts) first folds this batch into the stats."""
        if not self.norm_obs:
            return obs.to(torch.float32)
        if tuple(obs.shape[obs.ndim - len(self.obs_rms.shape) :]) != self.obs_rms.shape:
            raise ValueError(
                f"obs of shape {tuple(obs.shape)} do not end with the normalizer's shape {self.obs_rms.shape}; "
                "build RunningNormalizer(shape=obs trailing dims)"
            )
        if update:
            self.obs_rms.update(obs)
        rms = self.obs_rms
        normalized = (obs.to(rms.mean.dtype) - rms.mean) / torch.sqrt(rms.var + self.epsilon)
        return normalized.clamp(-self.clip_obs, self.clip_obs).to(torch.float32)

    def scale_reward(self, reward: torch.Tensor, done: torch.Tensor, update: bool) -> torch.Tensor:
        """Reward [num_envs] divided by the running std of the discounted return; `done` [num_envs] ends returns."""
        if not self.norm_reward:
            return reward.to(torch.float32)
        rms = self.ret_rms
        if update:
            # Also the resume rule: returns loaded for a different num_envs restart at 0.
            if self._returns is None or self._returns.shape != reward.shape:
                self._returns = torch.zeros(reward.shape, device=rms.mean.device, dtype=rms.mean.dtype)
            self._returns = self._returns * self.gamma + reward.to(rms.mean.dtype)
            rms.update(self._returns)
            self._returns = self._returns.masked_fill(done.to(torch.bool), 0.0)
        scaled = reward.to(rms.mean.dtype) / torch.sqrt(rms.var + self.epsilon)
        return scaled.clamp(-self.clip_reward, self.clip_reward).to(torch.float32)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """All statistics, the per-env discounted return and the settings as tensors (what `save` writes)."""
        state = {
            "obs_mean": self.obs_rms.mean,
            "obs_var": self.obs_rms.var,
            "obs_count": self.obs_rms.count,
            "ret_mean": self.ret_rms.mean,
            "ret_var": self.ret_rms.var,
            "ret_count": self.ret_rms.count,
            RETURNS_KEY: self._returns if self._returns is not None else torch.zeros(0, dtype=torch.float64),
        }
        for key in _CONFIG_KEYS:
            state[key] = torch.tensor(float(getattr(self, key)), dtype=torch.float64)
        return {k: v.detach().cpu().contiguous() for k, v in state.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore `state_dict()` output; without `discounted_return` (older files) the return restarts at 0."""
        missing = [k for k in (*_STAT_KEYS, *_CONFIG_KEYS) if k not in state]
        if missing:
            raise ValueError(f"normalizer state lacks {missing}; was it written by RunningNormalizer.save?")
        if tuple(state["obs_mean"].shape) != self.obs_rms.shape:
            raise ValueError(
                f"saved obs statistics have shape {tuple(state['obs_mean'].shape)}, this normalizer "
                f"{self.obs_rms.shape}; build it with shape={tuple(state['obs_mean'].shape)}"
            )
        dtype = self.obs_rms.mean.dtype
        for rms, prefix in ((self.obs_rms, "obs"), (self.ret_rms, "ret")):
            rms.mean = state[f"{prefix}_mean"].to(self.device, dtype)
            rms.var = state[f"{prefix}_var"].to(self.device, dtype)
            rms.count = state[f"{prefix}_count"].to(self.device, dtype)
        for key in _CONFIG_KEYS:
            setattr(self, key, float(state[key]))
        returns = state.get(RETURNS_KEY)
        self._returns = returns.to(self.device, dtype) if returns is not None and returns.numel() else None

    def save(self, path: str | Path) -> None:
        """Write the state to a safetensors file."""
        save_file(self.state_dict(), str(path))

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu") -> RunningNormalizer:
        """A normalizer with the statistics and settings of a file written by `save`."""
        state = load_file(str(path))
        if "obs_mean" not in state:
            raise ValueError(f"{path} is not a RunningNormalizer file (no obs_mean tensor)")
        normalizer = cls(tuple(state["obs_mean"].shape), device=device)
        normalizer.load_state_dict(state)
        return normalizer
