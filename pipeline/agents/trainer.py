"""Command-line trainer: `python -m pipeline.agents.trainer --config cfg.json` (also under torchrun for DDP).

The Dagster Pipes stage runs exactly this. Config JSON:

    {
      "env": "CartPole-v1"                       # a gymnasium id, or
           | {"factory": "pkg.module:function", "kwargs": {...}},   # returns an env or BatchedEnv
      "total_timesteps": 100000,
      "hparams": {...},                          # PPOConfig fields (checkpoint_dir, tensorboard_dir, ...)
      "output": "model.safetensors",             # final model (rank 0 writes it)
      "resume": false                            # continue from hparams.checkpoint_dir/latest if it exists
    }

It prints one JSON line (prefixed "RESULT ") with the final diagnostics, and writes it next to `output`.
Exit status: 0 on success or SIGTERM (checkpoint saved), 1 if training diverged.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path
from typing import Any

import torch

from pipeline.agents.checkpoints import checkpoint_path
from pipeline.agents.clstm_ppo import CLSTMPPO
from pipeline.agents.ppo_config import PPOConfig
from pipeline.agents.ppo_update import TrainingDivergedError


def intraday_env(
    num_envs: int = 64, days: int = 6, alpha: float = 0.3, seed: int = 0, first_day: int = 0,
    last_day: int | None = None, minutes: int = 390, device: str = "cpu", **config: Any,
) -> Any:
    """IntradayTrading on the numpy synthetic market (no polars needed), restricted to days [first, last)."""
    from pipeline.envs.intraday import IntradayConfig, IntradayTradingEnv
    from pipeline.envs.market_data import synthetic_market_tensors

    market = synthetic_market_tensors(days=days, alpha=alpha, seed=seed, minutes=minutes, device=device)
    market = market.subset(days=range(first_day, days if last_day is None else last_day))
    return IntradayTradingEnv(market, num_envs=num_envs, config=IntradayConfig(**config), device=device)


def build_env(spec: Any) -> Any:
    """A gymnasium id passes through; {"factory": "module:function", "kwargs": {...}} is called."""
    if isinstance(spec, str):
        return spec
    if isinstance(spec, dict) and "factory" in spec:
        module_name, _, func_name = spec["factory"].partition(":")
        factory = getattr(importlib.import_module(module_name), func_name, None)
        if factory is None:
            raise ValueError(f"env factory {spec['factory']!r} not found; use 'package.module:function'")
        return factory(**spec.get("kwargs", {}))
    raise ValueError(f"config 'env' must be a gymnasium id or {{'factory': 'module:function'}}, got {spec!r}")


def train(config: dict[str, Any]) -> dict[str, Any]:
    """Train (or resume) per `config`; returns the summary dict."""
    ppo_config = PPOConfig.from_dict(config.get("hparams", {}))
    env = build_env(config["env"])
    latest = Path(ppo_config.checkpoint_dir) / "latest.safetensors" if ppo_config.checkpoint_dir else None
    if config.get("resume") and latest is not None and latest.exists():
        agent = CLSTMPPO.load(latest, env=env, device=ppo_config.device)
        # The steps left, so the LR/entropy schedules run to the same total as an uninterrupted run.
        remaining = max(0, int(config["total_timesteps"]) - agent.num_timesteps)
        agent.learn(remaining, reset_num_timesteps=False)
    else:
        agent = CLSTMPPO(env, ppo_config)
        agent.learn(int(config["total_timesteps"]))
    summary = {
        "num_timesteps": agent.num_timesteps,
        "num_updates": agent.num_updates,
        "best": agent.best,
        "last": agent.history[-1] if agent.history else {},
        "rank": agent.rank,
        "world_size": agent.world_size,
    }
    if agent.rank == 0 and config.get("output"):
        out = agent.save(config["output"])
        summary["output"] = str(out)
        checkpoint_path(config["output"]).with_suffix(".json").write_text(json.dumps(summary, indent=2))
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="path to the training config JSON")
    args = parser.parse_args(argv)
    config = json.loads(Path(args.config).read_text())
    try:
        summary = train(config)
    except TrainingDivergedError as err:
        print(f"ERROR: {err}", file=sys.stderr, flush=True)
        return 1
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    if summary["rank"] == 0:
        print("RESULT " + json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
