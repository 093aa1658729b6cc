"""Which deployment graph each registry algorithm that can win a day gets, built from its registered artifact.

`clstm_ppo`: the checkpoint file (`DeployedPolicy`); `sb3_ppo`: the `model.zip` of a train_baseline folder
(`DeployedSB3Policy`; loaded by `load_baseline`, which unpickles nothing); `ensemble`: its `ensemble.json`
(`DeployedEnsemble`, every member inside). Each comes with the hyperparameters config.json records.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from pipeline.agents import checkpoints as ckpt
from pipeline.agents.clstm_agent import CLSTMAgent
from pipeline.agents.ensemble import MANIFEST_FILE, PolicyEnsemble
from pipeline.agents.sb3 import MODEL_FILE, load_baseline
from pipeline.export.ensemble_policy import DeployedEnsemble
from pipeline.export.onnx_policy import DeployedPolicy
from pipeline.export.sb3_policy import DeployedSB3Policy

DEPLOYABLE_ALGOS = ("clstm_ppo", "sb3_ppo", "ensemble")


@dataclass(frozen=True)
class Deployable:
    """A model's graph module, the file it was built from, and the hyperparameters it was trained with."""

    module: nn.Module
    model_file: Path
    hyperparameters: Mapping[str, Any]


def deployable(algo: str, model_path: str | Path) -> Deployable:
    """The graph of the registered model of `algo` at `model_path` (see the module docstring for the files)."""
    path = Path(model_path)
    if algo == "clstm_ppo":
        model_file = ckpt.checkpoint_path(path)
        _, meta = ckpt.read_checkpoint(model_file)
        # Exported on CPU in float32, uncompiled: the graph must not depend on where or how the model was trained.
        return Deployable(DeployedPolicy(CLSTMAgent.load(model_file, device="cpu", compile=False)), model_file,
                          meta["config"])
    if algo == "sb3_ppo":
        folder = path.parent if path.is_file() else path
        baseline = load_baseline(folder)
        return Deployable(DeployedSB3Policy(baseline), folder / MODEL_FILE, baseline.meta["config"])
    if algo == "ensemble":
        manifest_file = path if path.is_file() else path / MANIFEST_FILE
        manifest = json.loads(manifest_file.read_text())
        return Deployable(DeployedEnsemble(PolicyEnsemble.load(manifest_file)), manifest_file,
                          {k: manifest[k] for k in ("weighting", "temperature", "members")})
    raise ValueError(f"no deployment graph for algo {algo!r}; deployable algorithms: {DEPLOYABLE_ALGOS}")
