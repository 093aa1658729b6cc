"""Where and how long training runs: the device, the processes per node, the step budget and the preset.

The training assets read this resource to build the trainer's command line: one process, or `torchrun
--nproc-per-node K` (DDP, one process per GPU) when `nproc_per_node` > 1.
"""

from __future__ import annotations

import sys

import dagster as dg
import torch
from pydantic import Field

from pipeline.agents.ppo_config import PRESETS, preset_for_budget

TRAINER_MODULE = "pipeline.agents.trainer"


class ComputeResource(dg.ConfigurableResource):
    """The compute budget of the training assets."""

    device: str = Field(default="auto", description="cpu | cuda | cuda:N | auto (cuda when present, else cpu).")
    nproc_per_node: int = Field(
        default=1, description="Trainer processes; > 1 launches `torchrun --nproc-per-node K` (DDP, one per GPU)."
    )
    total_timesteps: int = Field(
        default=409_600,
        description="Env steps per CLSTM-PPO training run (all processes together). The default is the budget "
        "the small_budget preset was measured to learn in on 2 CPU cores (a few minutes).",
    )
    preset: str | None = Field(
        default=None, description="CLSTM-PPO preset (small_budget | gpu_long); unset: picked by budget and device."
    )
    torch_threads: int | None = Field(
        default=1,
        description="torch threads per CPU training process (default 1: the small LSTMs and MLPs gain little from "
        "more, and were measured 4-5x slower with 2 threads on a busy 2-core machine); unset: torch's default.",
    )

    def resolved_device(self) -> str:
        if self.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        return self.device

    def resolved_preset(self) -> str:
        name = self.preset or preset_for_budget(self.total_timesteps, self.resolved_device())
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
        return name

    def trainer_command(self, config_path: str) -> list[str]:
        """The command that runs the framework-free trainer on `config_path`."""
        if self.nproc_per_node < 1:
            raise ValueError(f"nproc_per_node must be >= 1, got {self.nproc_per_node}")
        if self.nproc_per_node == 1:
            return [sys.executable, "-m", TRAINER_MODULE, "--config", config_path]
        return [sys.executable, "-m", "torch.distributed.run", "--standalone",
                f"--nproc-per-node={self.nproc_per_node}", "-m", TRAINER_MODULE, "--config", config_path]
