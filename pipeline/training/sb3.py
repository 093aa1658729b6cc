"""SB3 baselines trained on a saved training dataset, and the selection walk for any policy (SB3, ensembles).

The baselines see the same dataset and costs as CLSTM-PPO: SB3 PPO on the intraday env, SAC on the portfolio env,
both on the dataset's train part. Their gymnasium ids (`pipeline/DatasetIntraday-v0`,
`pipeline/DatasetPortfolio-v0`, registered when this module is imported) take the dataset folder and the part, so
`train_baseline` records JSON kwargs (a path, config fields) in baseline.json, never tensors; it reaches them as
`"pipeline.training.sb3:pipeline/DatasetIntraday-v0"`, gymnasium's `module:id` form, which imports this
module (and so registers the ids) in whatever process makes the env.

Selection is scored by the same walk that scores CLSTM-PPO (`evaluate_policy` on the selection part in evaluation mode:
every (day, symbol) once), so the numbers of every algorithm on a day D compare one to one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch

from pipeline.agents.policy_eval import evaluate_policy, final_pnl
from pipeline.agents.sb3 import BaselineConfig, BaselinePolicy, train_baseline
from pipeline.envs.base import BatchedEnv
from pipeline.envs.gym_adapter import BatchedGymAdapter
from pipeline.training.env_factories import SELECTION_ENVS, intraday_env, portfolio_env

INTRADAY_ID = "pipeline/DatasetIntraday-v0"
PORTFOLIO_ID = "pipeline/DatasetPortfolio-v0"


def intraday_gym(dataset_dir: str | Path, part: str = "train", **config: Any) -> BatchedGymAdapter:
    """A single gymnasium IntradayTrading env on one part of a saved dataset; `config` are IntradayConfig fields."""
    return BatchedGymAdapter(lambda: intraday_env(dataset_dir, part, num_envs=1, **config))


def portfolio_gym(dataset_dir: str | Path, part: str = "train", **config: Any) -> BatchedGymAdapter:
    """A single gymnasium PortfolioAllocation env on one part of a saved dataset; `config`: PortfolioConfig fields."""
    return BatchedGymAdapter(lambda: portfolio_env(dataset_dir, part, num_envs=1, **config))


for _env_id, _entry_point in ((INTRADAY_ID, intraday_gym), (PORTFOLIO_ID, portfolio_gym)):
    if _env_id not in gym.registry:  # a reload must not warn about re-registration
        gym.register(id=_env_id, entry_point=_entry_point)


def portfolio_return(info: dict[str, Any]) -> torch.Tensor:
    """The portfolio env's episode result: the net return of its value (it starts at 1), per env."""
    return info["value"] - 1.0


@dataclass(frozen=True)
class Baseline:
    """One SB3 baseline: the SB3 algorithm, the env it trains on, and how its episodes are scored."""

    sb3_algo: str
    gym_id: str
    batched_env: Callable[..., BatchedEnv]
    outcome: Callable[[dict[str, Any]], torch.Tensor]

    @property
    def env_id(self) -> str:
        """The id `train_baseline` makes: `module:id`, so making it imports (and registers) this module."""
        return f"{__name__}:{self.gym_id}"


BASELINES: dict[str, Baseline] = {
    "sb3_ppo": Baseline("ppo", INTRADAY_ID, intraday_env, final_pnl),
    "sb3_sac": Baseline("sac", PORTFOLIO_ID, portfolio_env, portfolio_return),
}
"""The registry's algo names of the baselines, and what each one is."""


class EvaluatedPolicy:
    """What `evaluate_policy` needs of an agent, for a policy that is not a CLSTM-PPO agent (an SB3 baseline,
    an ensemble): its spaces and a deterministic `predict`. The generator is only there because the walk saves
    and restores the agent's RNG; deterministic actions never draw from it."""

    def __init__(self, policy: Any, obs_shape: tuple[int, ...], action_dim: int, discrete: bool) -> None:
        self.policy, self.obs_shape, self.action_dim, self.discrete = policy, obs_shape, action_dim, discrete
        self.generator = torch.Generator()

    @classmethod
    def of(cls, policy: Any) -> EvaluatedPolicy:
        """The view of an SB3 `BaselinePolicy`, or of a `PolicyEnsemble` (the spaces of its first member)."""
        member = policy.policies[0] if hasattr(policy, "policies") else policy
        if hasattr(member, "action_dim"):  # a CLSTM-PPO agent carries its spaces
            return cls(policy, tuple(member.obs_shape), int(member.action_dim), bool(member.discrete))
        space = member.action_space
        action_dim = int(space.n) if isinstance(space, gym.spaces.Discrete) else int(space.shape[0])
        return cls(policy, tuple(member.observation_space.shape), action_dim, bool(member.discrete))

    def predict(self, obs: Any, state: Any = None, episode_start: Any = None,
                deterministic: bool = True) -> tuple[Any, Any]:
        return self.policy.predict(obs, state=state, episode_start=episode_start, deterministic=deterministic)


def validate(policy: Any, algo: str, dataset_dir: str | Path, env_config: Mapping[str, Any] | Any) -> dict[str, float]:
    """`evaluate_policy` metrics of `policy` on the dataset's selection part, with the env of baseline `algo` and
    `env_config` (its config's fields, or the config itself)."""
    baseline = BASELINES[algo]
    fields = dict(env_config) if isinstance(env_config, Mapping) else {"settings": env_config}
    env = baseline.batched_env(dataset_dir, "selection", num_envs=SELECTION_ENVS, **fields)
    agent = policy if hasattr(policy, "generator") else EvaluatedPolicy.of(policy)
    return evaluate_policy(agent, env, outcome=baseline.outcome)


@contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """torch's CPU threads set to `count` (None: left as they are) inside the block, restored after it: the
    baselines train in the caller's process, whose other work keeps its own setting."""
    before = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train_dataset_baseline(
    algo: str, dataset_dir: str | Path, out_dir: str | Path, env_config: dict[str, Any], total_timesteps: int,
    seed: int = 0, hparams: dict[str, Any] | None = None, threads: int | None = None,
) -> tuple[BaselinePolicy, dict[str, float]]:
    """Train baseline `algo` ("sb3_ppo" | "sb3_sac") on the dataset's train part into `out_dir` (train_baseline's
    folder), then score it on the selection part; returns (policy, selection metrics). `threads`: torch's CPU
    threads while it runs (on a busy machine, 1 is several times faster than contending for all cores)."""
    if algo not in BASELINES:
        raise ValueError(f"baseline {algo!r} is not known; use one of {sorted(BASELINES)}")
    baseline = BASELINES[algo]
    hparams = dict(hparams or {})
    if baseline.sb3_algo == "sac":
        # SB3's default replay buffer is 1M transitions, preallocated; a run never stores more than its steps.
        hparams.setdefault("buffer_size", max(total_timesteps, 1))
    config = BaselineConfig(algo=baseline.sb3_algo, total_timesteps=total_timesteps, seed=seed, hparams=hparams)
    env_kwargs = {"dataset_dir": str(dataset_dir), "part": "train", **env_config}
    with torch_threads(threads):
        policy = train_baseline(baseline.env_id, out_dir, config, env_kwargs)
        return policy, validate(policy, algo, dataset_dir, env_config)
