"""Ensembles of trained policies (CLSTM-PPO seeds and/or SB3 baselines), weighted by validation performance.

Weights (`ensemble_weights`), all non-negative and summing to 1:
- "softmax" (default): w_i = exp(s_i / temperature) / sum_j exp(s_j / temperature) over validation Sharpe s_i;
  a high temperature tends to equal weights, a low one to the single best member.
- "positive": w_i proportional to max(s_i, 0); if no member has a positive Sharpe, equal weights.
- "equal": 1 / K each.
Discrete actions: the weighted mean of the members' action probabilities, then argmax (or a sample from it).
Continuous actions: the weighted mean of the members' deterministic actions.
Saved as `ensemble.json`: the weighting, each member's kind, path (relative when inside the manifest's folder),
validation score and weight. Members are saved by their own code (SB3 folder / CLSTM-PPO checkpoint).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

WEIGHTINGS = ("softmax", "positive", "equal")
MEMBER_KINDS = ("sb3", "clstm_ppo")
MANIFEST_FILE = "ensemble.json"
FORMAT_VERSION = 1


def ensemble_weights(scores: Sequence[float], method: str = "softmax", temperature: float = 1.0) -> np.ndarray:
    """Member weights from validation scores (e.g. Sharpe); see the module docstring for the methods."""
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1 or s.size == 0:
        raise ValueError(f"scores must be a non-empty 1-D sequence, got shape {s.shape}")
    if not np.isfinite(s).all():
        raise ValueError(f"validation scores must be finite, got {s.tolist()}; drop or re-evaluate those members")
    if method == "softmax":
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        z = np.exp((s - s.max()) / temperature)  # shifted by the max so exp never overflows
        return z / z.sum()
    if method == "positive":
        pos = np.clip(s, 0.0, None)
        return pos / pos.sum() if pos.sum() > 0 else np.full(s.size, 1.0 / s.size)
    if method == "equal":
        return np.full(s.size, 1.0 / s.size)
    raise ValueError(f"weighting {method!r} is not known; use one of {WEIGHTINGS}")


def sharpe_ratio(returns: Sequence[float]) -> float:
    """Per-step Sharpe ratio mean / std (ddof=1), not annualized; 0 when the returns do not vary."""
    r = np.asarray(returns, dtype=np.float64)
    if r.size < 2:
        return 0.0
    std = r.std(ddof=1)
    return float(r.mean() / std) if std > 1e-12 else 0.0


def validation_sharpe(policy: Any, env: gym.Env, n_steps: int, seed: int = 0) -> float:
    """Sharpe of the per-step rewards of `policy` acting deterministically for `n_steps` on `env`.

    `env` should be built on validation data (days after the training window) so the weights are honest.
    """
    obs, _ = env.reset(seed=seed)
    state, start, rewards = None, True, []
    for _ in range(n_steps):
        action, state = policy.predict(obs, state=state, episode_start=np.array([start]), deterministic=True)
        obs, reward, terminated, truncated, _ = env.step(action)
        rewards.append(float(reward))
        start = bool(terminated or truncated)
        if start:
            obs, _ = env.reset()
    return sharpe_ratio(rewards)


def load_member(kind: str, path: str | os.PathLike) -> Any:
    """Load one member by kind: 'sb3' (a train_baseline folder) or 'clstm_ppo' (a CLSTMPPO checkpoint)."""
    if kind == "sb3":
        from pipeline.agents.sb3 import load_baseline

        return load_baseline(path)
    if kind == "clstm_ppo":
        from pipeline.agents.clstm_ppo import CLSTMPPO

        return CLSTMPPO.load(path)
    raise ValueError(f"member kind {kind!r} is not known; use one of {MEMBER_KINDS}")


def _obs_shape(policy: Any) -> tuple[int, ...]:
    shape = getattr(policy, "obs_shape", None)
    return tuple(shape) if shape is not None else tuple(policy.observation_space.shape)


class PolicyEnsemble:
    """K policies with weights; same predict/action_probs API as a single member."""

    def __init__(self, policies: Sequence[Any], weights: Sequence[float], kinds: Sequence[str] | None = None,
                 paths: Sequence[str | os.PathLike] | None = None, scores: Sequence[float] | None = None,
                 weighting: str = "softmax", temperature: float = 1.0, seed: int = 0) -> None:
        w = np.asarray(weights, dtype=np.float64)
        if len(policies) == 0 or w.shape != (len(policies),):
            raise ValueError(f"need one weight per member: {len(policies)} members, weights shape {w.shape}")
        if (w < 0).any() or not np.isclose(w.sum(), 1.0):
            raise ValueError(f"weights must be non-negative and sum to 1, got {w.tolist()}")
        discrete = {bool(p.discrete) for p in policies}
        if len(discrete) != 1:
            raise ValueError("members mix discrete and continuous action spaces; ensemble one kind at a time")
        self.policies, self.weights = list(policies), w
        self.kinds = list(kinds) if kinds is not None else None
        self.paths = [Path(p) for p in paths] if paths is not None else None
        self.scores = list(map(float, scores)) if scores is not None else None
        self.weighting, self.temperature = weighting, float(temperature)
        self.discrete = discrete.pop()
        self.obs_shape = _obs_shape(self.policies[0])
        self._rng = np.random.default_rng(seed)

    @classmethod
    def from_members(cls, members: Sequence[tuple[str, str | os.PathLike]], scores: Sequence[float],
                     weighting: str = "softmax", temperature: float = 1.0, seed: int = 0) -> PolicyEnsemble:
        """Load (kind, path) members and weight them by their validation scores."""
        policies = [load_member(kind, path) for kind, path in members]
        weights = ensemble_weights(scores, weighting, temperature)
        return cls(policies, weights, [k for k, _ in members], [p for _, p in members], scores, weighting,
                   temperature, seed)

    def _single(self, obs: Any) -> bool:
        return np.ndim(obs) == len(self.obs_shape)

    def action_probs(self, obs: Any, state: list[Any] | None = None,
                     episode_start: Any = None) -> tuple[np.ndarray, list[Any]]:
        """(weighted mean probabilities [n, n_actions], per-member recurrent states)."""
        if not self.discrete:
            raise ValueError("action_probs needs discrete members; use predict() for continuous actions")
        states = state if state is not None else [None] * len(self.policies)
        mixed, new_states = None, []
        for policy, w, s in zip(self.policies, self.weights, states, strict=True):
            out = policy.action_probs(obs, s, episode_start)
            probs, s = out if isinstance(out, tuple) else (out, None)  # SB3 members return probs only
            probs = np.asarray(probs, dtype=np.float64).reshape(-1, np.shape(probs)[-1])
            if mixed is not None and probs.shape != mixed.shape:
                raise ValueError(f"members disagree on the action set: {probs.shape} vs {mixed.shape}")
            mixed = w * probs if mixed is None else mixed + w * probs
            new_states.append(s)
        return mixed, new_states

    def predict(self, obs: Any, state: list[Any] | None = None, episode_start: Any = None,
                deterministic: bool = True) -> tuple[np.ndarray, list[Any]]:
        """(action(s), per-member states): argmax (or a sample) of the mixed probabilities, or the mean action."""
        if self.discrete:
            probs, states = self.action_probs(obs, state, episode_start)
            if deterministic:
                actions = probs.argmax(-1)
            else:
                cdf = probs.cumsum(-1)
                u = self._rng.random((probs.shape[0], 1)) * cdf[:, -1:]
                actions = (u > cdf).sum(-1)
        else:
            states_in = state if state is not None else [None] * len(self.policies)
            outs = [p.predict(obs, state=s, episode_start=episode_start, deterministic=deterministic)
                    for p, s in zip(self.policies, states_in, strict=True)]
            stacked = np.stack([np.asarray(a, dtype=np.float64) for a, _ in outs])
            actions = np.tensordot(self.weights, stacked, axes=1).astype(np.float32)
            states = [s for _, s in outs]
            return actions, states
        return (actions[0] if self._single(obs) else actions), states

    def save(self, directory: str | os.PathLike) -> Path:
        """Write `ensemble.json` into `directory` (members must already be saved at their paths)."""
        if self.kinds is None or self.paths is None:
            raise ValueError("this ensemble was built from in-memory policies; build it with from_members() "
                             "(saved members) to save it")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        members = []
        for i, (kind, path) in enumerate(zip(self.kinds, self.paths, strict=True)):
            path = path.resolve()
            rel = path.relative_to(directory.resolve()) if path.is_relative_to(directory.resolve()) else path
            members.append({"kind": kind, "path": str(rel), "weight": float(self.weights[i]),
                            "score": None if self.scores is None else self.scores[i]})
        manifest = {"format_version": FORMAT_VERSION, "weighting": self.weighting,
                    "temperature": self.temperature, "discrete": self.discrete, "members": members}
        out = directory / MANIFEST_FILE
        tmp = out.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(manifest, indent=2))
        tmp.replace(out)  # atomic: a reader sees the old or the new manifest, never half of one
        return out

    @classmethod
    def load(cls, directory: str | os.PathLike, seed: int = 0) -> PolicyEnsemble:
        """Load `ensemble.json` and its members (relative member paths are resolved against `directory`)."""
        directory = Path(directory)
        manifest_path = directory / MANIFEST_FILE if directory.is_dir() else directory
        if not manifest_path.exists():
            raise FileNotFoundError(f"no {MANIFEST_FILE} at {directory}; write one with PolicyEnsemble.save()")
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"ensemble format {manifest.get('format_version')} is not {FORMAT_VERSION}")
        base = manifest_path.parent
        members = manifest["members"]
        paths = [base / m["path"] for m in members]
        policies = [load_member(m["kind"], p) for m, p in zip(members, paths, strict=True)]
        scores = [m["score"] for m in members]
        return cls(policies, [m["weight"] for m in members], [m["kind"] for m in members], paths,
                   None if any(s is None for s in scores) else scores, manifest["weighting"],
                   manifest["temperature"], seed)
