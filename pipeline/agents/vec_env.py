"""Turn whatever the user passes as `env` (gymnasium id, env, vector env, native BatchedEnv) into a BatchedEnv.

The number of envs has one home, the env: an env instance brings its own, and the count a caller passes down
(the agent's `PPOConfig.num_envs`) only says how many copies of a gymnasium id to build, or is checked against
the instance.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from pipeline.envs.base import BatchedEnv

DEFAULT_NUM_ENVS = 8
"""Copies of a gymnasium id the agent builds when no num_envs is given."""


class GymVectorBatchedEnv:
    """BatchedEnv view of a gymnasium VectorEnv in SAME_STEP autoreset mode (numpy <-> torch at the boundary)."""

    def __init__(self, vec_env: Any, device: torch.device) -> None:
        import gymnasium as gym
        from gymnasium.vector import AutoresetMode

        mode = vec_env.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
        if mode != AutoresetMode.SAME_STEP:
            raise ValueError(
                f"CLSTMPPO needs a vector env with same-step autoreset (final obs in info['final_obs']), got {mode}; "
                "build it with gymnasium.make_vec(id, num_envs, vectorization_mode='sync', "
                "vector_kwargs={'autoreset_mode': gymnasium.vector.AutoresetMode.SAME_STEP})"
            )
        space = vec_env.single_action_space
        if isinstance(space, gym.spaces.Discrete):
            self.discrete, self.action_dim = True, int(space.n)
            self._low = self._high = None
        elif isinstance(space, gym.spaces.Box) and len(space.shape) == 1:
            self.discrete, self.action_dim = False, int(space.shape[0])
            self._low, self._high = space.low, space.high
        else:
            raise ValueError(f"CLSTMPPO supports Discrete or 1-D Box action spaces, got {space}")
        self.vec_env = vec_env
        self.num_envs = int(vec_env.num_envs)
        self.device = torch.device(device)
        self.obs_shape = tuple(int(d) for d in vec_env.single_observation_space.shape)

    def _obs(self, obs: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(obs, dtype=np.float32), device=self.device)

    def reset(self, seed: int | None = None) -> tuple[torch.Tensor, dict[str, Any]]:
        obs, info = self.vec_env.reset(seed=seed)
        return self._obs(obs), info

    def step(
        self, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
        act = actions.detach().cpu().numpy()
        if self._low is not None:
            act = np.clip(act, self._low, self._high)
        obs, reward, terminated, truncated, info = self.vec_env.step(act)
        done = np.logical_or(terminated, truncated)
        out_info: dict[str, Any] = {}
        if done.any():
            final = np.asarray(obs, dtype=np.float32).copy()
            mask = info.get("_final_obs", done)
            for i in np.flatnonzero(mask):
                final[i] = np.asarray(info["final_obs"][i], dtype=np.float32)
            out_info["final_obs"] = self._obs(final)
        to = self.device
        return (
            self._obs(obs),
            torch.as_tensor(np.asarray(reward, dtype=np.float32), device=to),
            torch.as_tensor(np.asarray(terminated, dtype=bool), device=to),
            torch.as_tensor(np.asarray(truncated, dtype=bool), device=to),
            out_info,
        )

    def close(self) -> None:
        self.vec_env.close()


def as_batched_env(env: Any, num_envs: int | None, device: torch.device) -> BatchedEnv:
    """Wrap `env` (see module docstring) so the agent sees one BatchedEnv on `device`.

    `num_envs`: copies of a gymnasium id (None: 8); for an env instance None or its own count.
    """
    batched = _batched(env, DEFAULT_NUM_ENVS if num_envs is None else num_envs, device)
    if num_envs is not None and batched.num_envs != num_envs:
        raise ValueError(
            f"the env has {batched.num_envs} parallel envs but num_envs={num_envs} was asked for; leave num_envs "
            f"unset to train on the env's own count, or pass num_envs={batched.num_envs} (the env is the one "
            "home of this number)"
        )
    return batched


def _batched(env: Any, num_envs: int, device: torch.device) -> BatchedEnv:
    if isinstance(env, BatchedEnv) and not hasattr(env, "single_action_space"):
        return env
    import gymnasium as gym
    from gymnasium.vector import AutoresetMode, SyncVectorEnv

    if isinstance(env, str):
        if env.startswith("pipeline/"):
            import pipeline.envs  # noqa: F401  (registers the pipeline ids)
        vec = gym.make_vec(
            env, num_envs=num_envs, vectorization_mode="sync",
            vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP},
        )
        return GymVectorBatchedEnv(vec, device)
    if isinstance(env, gym.vector.VectorEnv):
        return GymVectorBatchedEnv(env, device)
    if isinstance(env, gym.Env):
        return GymVectorBatchedEnv(SyncVectorEnv([lambda: env], autoreset_mode=AutoresetMode.SAME_STEP), device)
    raise TypeError(
        f"env must be a gymnasium id, gymnasium.Env, gymnasium.vector.VectorEnv or a BatchedEnv, got {type(env)!r}"
    )
