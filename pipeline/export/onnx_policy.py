"""The deployed policy as a graph: raw observations in, action probabilities and the greedy action out.

`DeployedPolicy` wraps a CLSTM agent's network (eval mode, float32, on CPU) with a copy of its observation
normalizer, so the graph takes what the env emits ([batch, window, F] float32) and normalizes inside it with the
normalizer's own `normalize_obs` (its statistics become graph constants). It is written twice, both with a dynamic
batch dimension: a torch.export program (`.pt2`) and, converted from that same program, ONNX (the dynamo-based
`torch.onnx` exporter) for ONNX Runtime. Windowed observations carry no recurrent state between calls: every LSTM
runs over the whole window inside one call.

Nothing here unpickles: `load_program` refuses a `.pt2` archive with pickled members before `torch.export.load`
sees it (that loader falls back to pickle for some members, and for archives of the older format).
"""

from __future__ import annotations

import copy
import json
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from pipeline.agents.checkpoints import UnsafeCheckpointError
from pipeline.agents.clstm_agent import CLSTMAgent
from pipeline.agents.normalize import RunningNormalizer

INPUT_NAME = "obs"
OUTPUT_NAMES = ("action_probs", "action")
ONNX_OPSET = 20
"""Pinned so that a torch upgrade does not silently change what runtimes the artifact needs."""
ONNX_FILE, PROGRAM_FILE = "policy.onnx", "policy.pt2"


class DeployedPolicy(nn.Module):
    """Raw window observations [batch, T, F] -> (action probabilities [batch, n_actions], argmax action [batch]).

    The same computation as `CLSTMAgent.action_probs` and `predict(deterministic=True)` on windowed obs.
    """

    algo = "clstm_ppo"

    def __init__(self, agent: CLSTMAgent) -> None:
        if not agent.discrete:
            raise ValueError("the deployment export covers discrete-action policies (action probabilities); "
                             f"this agent has {agent.action_dim} continuous actions")
        if len(agent.obs_shape) != 2:
            raise ValueError(f"the deployment export needs windowed (T, F) observations, got {agent.obs_shape}: "
                             "1-D observations would make the rolling window a recurrent state the graph lacks")
        super().__init__()
        self.obs_shape = tuple(agent.obs_shape)
        self.n_actions = int(agent.action_dim)
        self.policy = copy.deepcopy(agent.policy).to("cpu", torch.float32).eval().requires_grad_(False)
        self.policy.amp = False  # deployment runs float32, whatever the training used
        source = agent.normalizer
        self.normalizer = RunningNormalizer(source.obs_rms.shape, device="cpu", norm_obs=source.norm_obs)
        self.normalizer.load_state_dict(source.state_dict())

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.policy.actor_out(self.policy.shared(self.normalizer.normalize_obs(obs, update=False)))
        return torch.softmax(logits, dim=-1), logits.argmax(dim=-1)

    def normalizer_state(self) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        """The statistics (what `normalizer.safetensors` holds, as `RunningNormalizer.load` reads it back) and the
        settings (its metadata); the per-env training return is no deployment state."""
        state = {k: v for k, v in self.normalizer.state_dict().items() if k != "discounted_return"}
        return state, {"normalize_obs": str(self.normalizer.norm_obs).lower()}

    def normalization(self) -> dict[str, Any]:
        """How the graph normalizes (config.json's description)."""
        return {"inside_graph": self.normalizer.norm_obs,
                "formula": "clip((obs - obs_mean) / sqrt(obs_var + epsilon), -clip_obs, clip_obs), in float64"}


def export_program(module: nn.Module) -> torch.export.ExportedProgram:
    """`module` as a torch.export program whose first (batch) dimension is dynamic, from 1 up."""
    example = torch.zeros((2, *module.obs_shape), dtype=torch.float32)
    with warnings.catch_warnings():
        # nn.LSTM reassigns its _flat_weights in forward; export restores them, and PyTorch made this check a
        # warning for exactly that case (pytorch/pytorch#163809).
        warnings.filterwarnings("ignore", message=r"The tensor attributes .*_flat_weights", category=UserWarning)
        program = torch.export.export(
            module, (example,), dynamic_shapes={INPUT_NAME: {0: torch.export.Dim("batch", min=1)}}
        )
    # Saved example inputs are a torch.save pickle inside the archive; deployment needs none.
    program.example_inputs = None
    return program


def save_program(program: torch.export.ExportedProgram, path: Path) -> None:
    """Write `program` as a .pt2 archive (weights as raw bytes, graph as JSON: no pickle)."""
    torch.export.save(program, path)


def save_onnx(program: torch.export.ExportedProgram, path: Path) -> None:
    """Convert the exported program to ONNX (input `obs`, outputs `action_probs` and `action`) and write it."""
    onnx_program = torch.onnx.export(
        program, dynamo=True, opset_version=ONNX_OPSET, input_names=[INPUT_NAME],
        output_names=list(OUTPUT_NAMES), verbose=False,
    )
    onnx_program.save(str(path))


def _policy_file(path: str | Path, name: str) -> Path:
    target = Path(path)
    return target / name if target.is_dir() else target


def load_onnx_session(path: str | Path) -> ort.InferenceSession:
    """An ONNX Runtime CPU session of `policy.onnx` (pass the file or the artifact folder)."""
    return ort.InferenceSession(str(_policy_file(path, ONNX_FILE)), providers=["CPUExecutionProvider"])


def run_onnx(artifact_dir: str | Path, obs: np.ndarray) -> np.ndarray:
    """Action probabilities [batch, n_actions] for raw observations [batch, T, F] through ONNX Runtime."""
    session = load_onnx_session(artifact_dir)
    probs, _ = session.run(list(OUTPUT_NAMES), {INPUT_NAME: np.asarray(obs, dtype=np.float32)})
    return probs


def _refuse_pickled_members(path: Path) -> None:
    """Raise unless `path` is a pt2-format archive whose weights, constants and sample inputs hold no pickle."""
    with zipfile.ZipFile(path) as archive:
        members = {info.filename: info for info in archive.infolist()}
        formats = [archive.read(name) for name in members if name.endswith("/archive_format")]
        pickled = [name for name, info in members.items()
                   if "/data/sample_inputs/" in name and info.file_size > 0]
        for name in members:
            if name.endswith("_config.json") and ("/data/weights/" in name or "/data/constants/" in name):
                entries = json.loads(archive.read(name)).get("config", {})
                pickled += [f"{name}:{key}" for key, entry in entries.items() if entry.get("use_pickle")]
    if formats != [b"pt2"] or pickled:
        raise UnsafeCheckpointError(
            f"{path} is not a pickle-free torch.export archive (format {formats}, pickled members {pickled}); "
            "this project never unpickles artifacts: export the policy again with pipeline.export"
        )


def load_program(path: str | Path) -> torch.export.ExportedProgram:
    """The exported program of `policy.pt2` (the file or the artifact folder), after checking it holds no pickle."""
    target = _policy_file(path, PROGRAM_FILE)
    _refuse_pickled_members(target)
    return torch.export.load(target)


@torch.no_grad()
def run_exported(artifact_dir: str | Path, obs: np.ndarray) -> np.ndarray:
    """Action probabilities [batch, n_actions] for raw observations [batch, T, F] through the torch.export program."""
    probs, _ = load_program(artifact_dir).module()(torch.as_tensor(np.asarray(obs, dtype=np.float32)))
    return probs.numpy()
