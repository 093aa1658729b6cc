"""Data-parallel training is as good as one process: the trainer CLI (the command `clstm_ppo_policy` runs, from
`ComputeResource.trainer_command`) solves CartPole-v1 under torchrun with 2 CPU ranks (gloo) as it does in one
process, at the same total budget, seed and hyperparameters.

How the trainer splits the work: `total_timesteps` counts every rank's env steps (CLSTMPPO.learn adds
num_steps * num_envs * world_size per iteration), while `num_envs` is per rank (each rank builds its own env from
the config). So the 2-rank run gets half the envs per rank: the same 512 env steps per update and the same number
of updates, each update's gradient the mean over both ranks' halves (the same minibatch size as one process).
benchmarks/ddp_parity.py measures the same on the planted-signal intraday market, with wall time and env-steps/s.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from test_learning import CARTPOLE_HPARAMS, evaluate_cartpole

from pipeline.agents.clstm_ppo import CLSTMPPO
from pipeline.training.run import GymData, TrainingRun
from resources.compute import ComputeResource

ROOT = Path(__file__).resolve().parents[1]
CARTPOLE_STEPS = 20_480  # the CartPole recipe's budget (tests/test_learning.py), all ranks together
SOLVED = 195.0  # CartPole-v1's classic "solved" mean return
# The 2-rank model may score this much below the 1-process one (its rollouts are different draws, so the scores
# are not equal) and still count as as good; with the absolute bar it must also solve the task.
PARITY_TOLERANCE = 100.0


@dataclass
class TrainerRun:
    """A trainer process started by `start_trainer`; `result()` waits for it."""

    proc: subprocess.Popen[str]
    started: float

    def result(self, timeout: float = 1800) -> dict[str, Any]:
        """The run's RESULT summary, with its wall time from start to exit (`wall_s`) added."""
        stdout, stderr = self.proc.communicate(timeout=timeout)
        wall = time.perf_counter() - self.started
        assert self.proc.returncode == 0, stdout[-3000:] + stderr[-3000:]
        line = next(x for x in stdout.splitlines() if x.startswith("RESULT "))
        return json.loads(line.removeprefix("RESULT ")) | {"wall_s": wall}


def start_trainer(run: TrainingRun, nproc: int, workdir: Path, pythonpath: Sequence[Path] = ()) -> TrainerRun:
    """Start the trainer on `run` with `nproc` CPU processes (torchrun when > 1), the command the training asset
    runs; `pythonpath` adds folders to the trainer's import path."""
    run_path = run.save(workdir / "training_run.json")
    command = ComputeResource(device="cpu", nproc_per_node=nproc).trainer_command(str(run_path))
    # One thread per process: 2 ranks on 2 cores, and no oversubscription from OpenMP.
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(str(p) for p in (ROOT, *pythonpath))}
    proc = subprocess.Popen(command, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return TrainerRun(proc, time.perf_counter())


def cartpole_run(nproc: int, output: Path) -> TrainingRun:
    """The CartPole recipe for `nproc` ranks: the envs split evenly, so every update sees the same 512 steps."""
    hparams = {k: v for k, v in CARTPOLE_HPARAMS.items() if k != "num_envs"} | {"torch_threads": 1}
    return TrainingRun.build(GymData("CartPole-v1"), total_timesteps=CARTPOLE_STEPS, preset="gpu_long",
                             num_envs=CARTPOLE_HPARAMS["num_envs"] // nproc, agent=hparams,
                             output_dir=str(output.parent))


def test_two_process_trainer_solves_cartpole_as_well_as_one(tmp_path: Path) -> None:
    outputs = {n: tmp_path / f"nproc{n}" / "model.safetensors" for n in (1, 2)}
    # Both runs at once: the test's wall time is the slower run's, not the sum.
    runs = {n: start_trainer(cartpole_run(n, outputs[n]), n, outputs[n].parent) for n in (1, 2)}
    results = {n: run.result() for n, run in runs.items()}
    for n, result in results.items():
        assert result["world_size"] == n
        assert result["num_timesteps"] == CARTPOLE_STEPS
    # Same steps per update, so the same number of updates.
    assert results[1]["num_updates"] == results[2]["num_updates"]
    scores = {n: evaluate_cartpole(CLSTMPPO.load(outputs[n], device="cpu")) for n in (1, 2)}
    print(f"CartPole-v1 deterministic mean return: 1 process {scores[1]:.1f}, 2 processes {scores[2]:.1f}")
    assert scores[1] >= SOLVED, scores
    assert scores[2] >= SOLVED, scores
    assert scores[2] >= scores[1] - PARITY_TOLERANCE, scores
