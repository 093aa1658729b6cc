"""Command-line trainer: `python -m pipeline.training.trainer training_run.json` (also under torchrun for DDP).

The `clstm_ppo_policy` asset runs exactly this through Dagster Pipes, on the `TrainingRun` it saved beside the
model (`pipeline.training.run`: the data, the env settings, every hyperparameter, the envs and the budget). The
trainer builds the training env and, for a dataset, the selection walk that picks the best_composite checkpoint
and drives early stopping; it writes the chosen model to the run's `output` (the best selection checkpoint when
there is a selection walk, else the last weights) and, with `resume`, continues from the latest checkpoint.

It prints one JSON line (prefixed "RESULT ") with the final diagnostics, and writes it next to the model.
Launched by Dagster Pipes (`PipesSubprocessClient`), rank 0 also streams one log line per update into the run's
logs and reports the diagnostics, selection metrics and a training-curve plot as the asset's metadata; Dagster's
SIGINT on a cancelled run stops training the way SIGTERM does (checkpoint saved). The Pipes side needs only the
small `dagster-pipes` package, never `dagster`.
Exit status: 0 on success or SIGTERM (checkpoint saved), 1 if training diverged.
"""

from __future__ import annotations

import argparse
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

from pipeline.agents.checkpoints import checkpoint_path, read_checkpoint
from pipeline.agents.clstm_ppo import CLSTMPPO
from pipeline.agents.policy_eval import evaluate_policy
from pipeline.agents.ppo_config import PPOConfig
from pipeline.agents.ppo_update import TrainingDivergedError
from pipeline.training.curves import training_curve_markdown
from pipeline.training.run import TrainingRun

# The per-update values streamed to the run's logs and plotted as the training curve.
PROGRESS_KEYS = ("episodes/mean_return", "val_mean_pnl", "losses/entropy_pct_of_initial", "losses/approx_kl",
                 "losses/explained_variance", "charts/SPS")
CURVE_KEYS = ("episodes/mean_return", "val_mean_pnl", "losses/entropy_pct_of_initial", "losses/approx_kl")


def train(run: TrainingRun, on_update: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Train (or resume) `run`; returns the summary dict. `on_update` gets each update's diagnostics."""
    cfg = run.agent_config()
    env = run.train_env()
    selection_env = run.selection_env()
    latest = Path(cfg.checkpoint_dir) / "latest.safetensors" if cfg.checkpoint_dir else None
    if run.resume and latest is not None and latest.exists():
        agent = CLSTMPPO.load(latest, env=env, device=cfg.device, validation_env=selection_env)
        # The steps left, so the LR/entropy schedules run to the same total as an uninterrupted run.
        remaining = max(0, run.total_timesteps - agent.num_timesteps)
        agent.learn(remaining, reset_num_timesteps=False, callback=on_update)
    else:
        agent = CLSTMPPO(env, cfg, validation_env=selection_env)
        agent.learn(run.total_timesteps, callback=on_update)
    summary: dict[str, Any] = {
        "num_timesteps": agent.num_timesteps,
        "num_updates": agent.num_updates,
        "best": agent.best,
        "last": agent.history[-1] if agent.history else {},
        "rank": agent.rank,
        "world_size": agent.world_size,
        "config": cfg.to_dict(),
    }
    if agent.rank == 0 and run.output is not None:
        summary |= _write_output(agent, cfg, selection_env, run.output)
        checkpoint_path(run.output).with_suffix(".json").write_text(json.dumps(_jsonable(summary), indent=2))
    return summary


def _write_output(agent: CLSTMPPO, cfg: PPOConfig, validation_env: Any, output: str | Path) -> dict[str, Any]:
    """Save the chosen model to `output`: the best validation checkpoint if there is one (validation selection
    needs a checkpoint_dir), else the last weights. With a validation env, its metrics on the validation days
    are the ones the checkpoint was chosen on (recorded in it: the walk of the deterministic policy over the same
    days gives them again, tests/test_assets_training.py), or for the last weights measured on the saved model."""
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
        meta = read_checkpoint(target)[1]
        scored = meta["best_source"] == "validation" and chosen != "last update"
        # The last weights, or a best_composite left by a run that scored training episodes, are measured here.
        out["validation"] = meta["metrics"] if scored else evaluate_policy(CLSTMPPO.load(target, device=cfg.device),
                                                                           validation_env)
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
    parser.add_argument("run", help="a TrainingRun's JSON (training_run.json)")
    args = parser.parse_args(argv)
    run = TrainingRun.load(args.run)
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
            summary = train(run, on_update)
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
