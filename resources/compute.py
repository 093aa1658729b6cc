"""Where and how long training runs: the device, the processes per node, the step budget and the launcher.

The training assets read this resource to build the trainer's command line: one process, or `torchrun
--nproc-per-node K` (DDP, one process per GPU) when `nproc_per_node` > 1. The launcher says where that command
runs through Dagster Pipes: a local subprocess, or a Kubernetes pod on a GPU node built from
`deploy/k8s/trainer-pod.yaml` (DESIGN §10).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Literal

import dagster as dg
import torch
import yaml
from dagster_k8s import PipesK8sClient
from pydantic import Field

TRAINER_MODULE = "pipeline.training.trainer"
REPO_ROOT = Path(__file__).resolve().parents[1]
TRAINER_POD_MANIFEST = "deploy/k8s/trainer-pod.yaml"
GPU_RESOURCE = "nvidia.com/gpu"
# The interpreter on the PATH of the trainer image; the local launcher uses this process's own.
POD_PYTHON = "python"


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
    torch_threads: int | None = Field(
        default=1,
        description="torch threads per CPU training process (default 1: the small LSTMs and MLPs gain little from "
        "more, and were measured 4-5x slower with 2 threads on a busy 2-core machine); unset: torch's default.",
    )
    launcher: Literal["subprocess", "k8s"] = Field(
        default="subprocess",
        description="Where the trainer runs through Dagster Pipes: subprocess (this machine) | k8s (a pod on a GPU "
        "node, from k8s_pod_manifest, run by dagster_k8s.PipesK8sClient).",
    )
    k8s_pod_manifest: str = Field(
        default=TRAINER_POD_MANIFEST,
        description="The trainer's Pod manifest (YAML) for the k8s launcher; a relative path is from the repo root.",
    )
    k8s_image: str | None = Field(default=None, description="Trainer image for the k8s launcher; unset: the manifest's.")
    k8s_namespace: str | None = Field(
        default=None, description="Namespace of the trainer pod; unset: the run's own namespace, else `default`."
    )

    def resolved_device(self) -> str:
        if self.device == "auto":
            # A k8s trainer runs on a GPU node, not on this machine: what this machine has says nothing about it.
            if self.launcher == "k8s":
                return "cuda"
            return "cuda" if torch.cuda.is_available() else "cpu"
        return self.device

    def trainer_command(self, run_path: str) -> list[str]:
        """The command that runs the framework-free trainer on the TrainingRun saved at `run_path`."""
        if self.nproc_per_node < 1:
            raise ValueError(f"nproc_per_node must be >= 1, got {self.nproc_per_node}")
        python = POD_PYTHON if self.launcher == "k8s" else sys.executable
        if self.nproc_per_node == 1:
            return [python, "-m", TRAINER_MODULE, run_path]
        return [python, "-m", "torch.distributed.run", "--standalone",
                f"--nproc-per-node={self.nproc_per_node}", "-m", TRAINER_MODULE, run_path]

    def pipes_client(self, subprocess_client: dg.PipesSubprocessClient) -> dg.PipesClient:
        """The Pipes client of the launcher: the code location's subprocess client, or a Kubernetes one."""
        if self.launcher == "k8s":
            return PipesK8sClient()
        return subprocess_client

    def pipes_run_args(self, run_path: str) -> dict[str, Any]:
        """The keyword arguments (besides `context`) of the launcher's Pipes client `run` for the trainer on
        the TrainingRun at `run_path`. The k8s launcher's pod shares the data lake volume with the run, so the paths hold there."""
        command = self.trainer_command(run_path)
        if self.launcher == "subprocess":
            return {"command": command}
        pod = self.trainer_pod()
        return {"command": command, "image": self.k8s_image, "namespace": self.k8s_namespace,
                "base_pod_meta": pod.get("metadata") or {}, "base_pod_spec": pod["spec"]}

    def trainer_pod(self) -> dict[str, Any]:
        """The Pod manifest of the k8s launcher, its first container's GPU limit raised to `nproc_per_node` (one
        trainer process per GPU)."""
        path = Path(self.k8s_pod_manifest)
        path = path if path.is_absolute() else REPO_ROOT / path
        if not path.exists():
            raise FileNotFoundError(f"trainer pod manifest {path} not found: set compute.k8s_pod_manifest to a Pod "
                                    f"YAML (the repo's is {TRAINER_POD_MANIFEST})")
        pod = yaml.safe_load(path.read_text())
        is_pod = isinstance(pod, dict) and pod.get("kind") == "Pod"
        containers = (pod.get("spec") or {}).get("containers") if is_pod else None
        if not containers:
            raise ValueError(f"{path} is not a Pod manifest with spec.containers; see {TRAINER_POD_MANIFEST}")
        limits = containers[0].setdefault("resources", {}).setdefault("limits", {})
        limits[GPU_RESOURCE] = str(max(int(limits.get(GPU_RESOURCE, 0)), self.nproc_per_node))  # a k8s quantity
        return pod
