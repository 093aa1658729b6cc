"""Command-line trainer: `python -m pipeline.agents.trainer --config cfg.json` (also under torchrun for DDP).

The `clstm_ppo_policy` asset runs exactly this through Dagster Pipes. Config JSON:

    {
      "env": "CartPole-v1"                       # a gymnasium id, or
           | {"factory": "pkg.module:function", "kwargs": {...}},   # returns an env or BatchedEnv
      "validation_env": {"factory": ..., "kwargs": {...}},           # optional: an evaluation-mode env that
                                                 # picks best_* checkpoints and drives early stopping
      "total_timesteps": 100000,
      "preset": "small_budget",                  # optional: PPOConfig.preset(name), then hparams on top
      "hparams": {...},                          # PPOConfig fields (checkpoint_dir, tensorboard_dir, ...)
      "output": "model.safetensors",             # final model (rank 0 writes it): the best validation
                                                 # checkpoint when there is a validation env, else the last
      "resume": false                            # continue from hparams.checkpoint_dir/latest if it exists
    }

It prints one JSON line (prefixed "RESULT ") with the final diagnostics, and writes it next to `output`.
Launched by Dagster Pipes (`PipesSubprocessClient`), rank 0 also streams one log line per update into the run's
logs and reports the diagnostics, validation metrics and a training-curve plot as the asset's metadata; Dagster's
SIGINT on a cancelled run stops training the way SIGTERM does (checkpoint saved). The Pipes side needs only the
small `dagster-pipes` package, never `dagster`.
Exit status: 0 on success or SIGTERM (checkpoint saved), 1 if training diverged.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from pipeline.agents.checkpoints import checkpoint_path
from pipeline.agents.clstm_ppo import CLSTMPPO
from pipeline.agents.policy_eval import evaluate_policy
from pipeline.agents.ppo_config import PPOConfig
from pipeline.agents.ppo_update import TrainingDivergedError
from pipeline.training.curves import training_curve_markdown

# The per-update values streamed to the run's logs and plotted as the training curve.
PROGRESS_KEYS = ("episodes/mean_return", "val_mean_pnl", "losses/entropy_pct_of_initial", "losses/approx_kl",
                 "losses/explained_variance", "charts/SPS")
CURVE_KEYS = ("episodes/mean_return", "val_mean_pnl", "losses/entropy_pct_of_initial", "losses/approx_kl")


def intraday_env(
    num_envs: int = 64, days: int = 6, alpha: float = 0.3, seed: int = 0, first_day: int = 0,
    last_day: int | None = None, minutes: int = 390, device: str = "cpu", **config: Any,
) -> Any:
    """IntradayTrading on the numpy synthetic market (no polars needed), restricted to days [first, last)."""
    from pipeline.envs.intraday import IntradayConfig, IntradayTradingEnv
    from pipeline.envs.tensors import synthetic_market_tensors

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


def ppo_config(config: dict[str, Any]) -> PPOConfig:
    """The run's hyperparameters: the named preset (if any) with `hparams` on top."""
    hparams = config.get("hparams", {})
    if config.get("preset"):
        return PPOConfig.preset(config["preset"], **hparams)
    return PPOConfig.from_dict(hparams)


def train(config: dict[str, Any], on_update: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Train (or resume) per `config`; returns the summary dict. `on_update` gets each update's diagnostics."""
    cfg = ppo_config(config)
    env = build_env(config["env"])
    validation_env = build_env(config["validation_env"]) if config.get("validation_env") else None
    latest = Path(cfg.checkpoint_dir) / "latest.safetensors" if cfg.checkpoint_dir else None
    if config.get("resume") and latest is not None and latest.exists():
        agent = CLSTMPPO.load(latest, env=env, device=cfg.device, validation_env=validation_env)
        # The steps left, so the LR/entropy schedules run to the same total as an uninterrupted run.
        remaining = max(0, int(config["total_timesteps"]) - agent.num_timesteps)
        agent.learn(remaining, reset_num_timesteps=False, callback=on_update)
    else:
        agent = CLSTMPPO(env, cfg, validation_env=validation_env)
        agent.learn(int(config["total_timesteps"]), callback=on_update)
    summary: dict[str, Any] = {
        "num_timesteps": agent.num_timesteps,
        "num_updates": agent.num_updates,
        "best": agent.best,
        "last": agent.history[-1] if agent.history else {},
        "rank": agent.rank,
        "world_size": agent.world_size,
        "config": cfg.to_dict(),
    }
    if agent.rank == 0 and config.get("output"):
        summary |= _write_output(agent, cfg, validation_env, config["output"])
        checkpoint_path(config["output"]).with_suffix(".json").write_text(json.dumps(_jsonable(summary), indent=2))
    return summary


def _write_output(agent: CLSTMPPO, cfg: PPOConfig, validation_env: Any, output: str) -> dict[str, Any]:
    """Save the chosen model to `output`: the best validation checkpoint if there is one (validation selection
    needs a checkpoint_dir), else the last weights; with a validation env, its metrics on the validation days are
    measured again on the saved model."""
    best = Path(cfg.checkpoint_dir) / "best_composite.safetensors" if cfg.checkpoint_dir else None
    target = checkpoint_path(output)
    if validation_env is not None and best is not None and best.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(best, target)
        chosen = "best_composite (validation)"
    else:
        agent.save(target)
        chosen = "last update"
    out: dict[str, Any] = {"output": str(target), "selected": chosen}
    if validation_env is not None:
        out["validation"] = evaluate_policy(CLSTMPPO.load(target, device=cfg.device), validation_env)
    return out


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=float))


def progress_line(row: dict[str, Any]) -> str:
    """One update's progress as `key=value` pairs (the keys of PROGRESS_KEYS it has)."""
    shown = {"update": row.get("update"), "steps": row.get("global_step")}
    shown |= {k.rsplit("/", 1)[-1]: row[k] for k in PROGRESS_KEYS if k in row}
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items())


def pipes_metadata(summary: dict[str, Any], history: list[dict[str, Any]]) -> dict[str, Any]:
    """What the asset shows: final diagnostics, validation metrics, the selection and the training curve."""
    last = {f"last/{k}": float(v) for k, v in summary.get("last", {}).items() if isinstance(v, int | float)}
    validation = {f"validation/{k}": float(v) for k, v in summary.get("validation", {}).items()}
    return {
        "num_timesteps": summary["num_timesteps"],
        "num_updates": summary["num_updates"],
        "world_size": summary["world_size"],
        "selected_checkpoint": summary.get("selected", ""),
        "best": {"raw_value": _jsonable(summary["best"]), "type": "json"},
        "hparams": {"raw_value": _jsonable(summary["config"]), "type": "json"},
        **{k: v for k, v in (last | validation).items() if v == v},
        "training_curve": {"raw_value": training_curve_markdown(history, CURVE_KEYS), "type": "md"},
    }


@contextmanager
def _pipes() -> Iterator[Any]:
    """The Dagster Pipes context on rank 0 of a Pipes-launched run, else None (a plain CLI run)."""
    rank0 = int(os.environ.get("RANK", "0")) == 0
    try:
        from dagster_pipes import PipesEnvVarParamsLoader, open_dagster_pipes
    except ImportError:
        yield None
        return
    if not (rank0 and PipesEnvVarParamsLoader().is_dagster_pipes_process()):
        yield None
        return
    with open_dagster_pipes() as pipes:
        yield pipes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="path to the training config JSON")
    args = parser.parse_args(argv)
    config = json.loads(Path(args.config).read_text())
    with _pipes() as pipes:
        history: list[dict[str, Any]] = []

        def on_update(row: dict[str, Any]) -> None:
            history.append(row)
            if pipes is not None:
                pipes.log.info(progress_line(row))

        if pipes is not None:
            # Dagster stops a cancelled run's subprocess with SIGINT: save and exit as on SIGTERM.
            signal.signal(signal.SIGINT, lambda *_: os.kill(os.getpid(), signal.SIGTERM))
        try:
            summary = train(config, on_update)
        except TrainingDivergedError as err:
            print(f"ERROR: {err}", file=sys.stderr, flush=True)
            if pipes is not None:
                pipes.log.error(f"training diverged: {err}")
            return 1
        finally:
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()
        if pipes is not None:
            pipes.report_asset_materialization(metadata=pipes_metadata(summary, history))
    if summary["rank"] == 0:
        print("RESULT " + json.dumps(_jsonable(summary)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
