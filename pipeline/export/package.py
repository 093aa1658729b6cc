"""The deployment artifact of one trained model: a folder that serves the policy without this project.

Any model kind that can win a day is packaged the same way (`model_kinds.deployable`): a CLSTM-PPO checkpoint, an
SB3 PPO baseline (VecNormalize statistics inside the graph) or an ensemble (one graph: every member with its own
normalization, and the weights). `export_deployment` writes `policy.onnx` and `policy.pt2` (raw observations in, normalization inside the graph),
`normalizer.safetensors`, `config.json`, `lineage.json` and `MODEL_CARD.md`. The folder is built next to its
destination and swapped in with one rename (`pipeline.versioned_folder`: the folder is a link to its current
version), so a reader finds the previous artifact or the new one, never none or half of one, and a crash's
leftovers are removed by the next export. The
artifact's `sha256` is the sha256 of its `sha256sum`-style listing (one "<sha256>  <file name>" line per file,
sorted by name), so it changes when any file does; an export of the same model with the same inputs is
byte-identical, so it also has the same sha256.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from safetensors.torch import save_file
from torch import nn

from pipeline.envs.intraday import AGENT_FEATURES, FLAT, HOLD, LONG, SHORT
from pipeline.export.model_card import ModelCard, render_model_card
from pipeline.export.model_kinds import deployable
from pipeline.export.onnx_policy import (
    INPUT_NAME,
    ONNX_FILE,
    ONNX_OPSET,
    OUTPUT_NAMES,
    PROGRAM_FILE,
    export_program,
    load_onnx_session,
    load_program,
    run_exported,
    run_onnx,
    save_onnx,
    save_program,
)
from pipeline.registry import file_sha256, sha256_text
from pipeline.versioned_folder import replacing

__all__ = ["ARTIFACT_FILES", "DeploymentArtifact", "export_deployment", "load_onnx_session", "load_program",
           "read_artifact", "run_exported", "run_onnx"]
"""The consumers' entry points, the graph runners of onnx_policy included."""

NORMALIZER_FILE, CONFIG_FILE, LINEAGE_FILE, CARD_FILE = (
    "normalizer.safetensors", "config.json", "lineage.json", "MODEL_CARD.md")
ARTIFACT_FILES = (ONNX_FILE, PROGRAM_FILE, NORMALIZER_FILE, CONFIG_FILE, LINEAGE_FILE, CARD_FILE)
FORMAT_VERSION = 1
INTRADAY_ACTIONS = tuple(name for _, name in sorted({HOLD: "hold", LONG: "long", SHORT: "short",
                                                      FLAT: "flat"}.items()))
"""IntradayTrading's action meanings, by action index."""


@dataclass(frozen=True)
class DeploymentArtifact:
    """A deployment folder, each file's sha256, and the sha256 of the whole (what the registry records)."""

    path: Path
    files: Mapping[str, str]
    """File name -> sha256, for every file in the folder."""
    sha256: str

    @property
    def paths(self) -> dict[str, Path]:
        """File name -> path."""
        return {name: self.path / name for name in self.files}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (for asset metadata)."""
        return {"path": str(self.path), "sha256": self.sha256, "files": dict(self.files)}


def read_artifact(path: str | Path) -> DeploymentArtifact:
    """Hash the files of a deployment folder (to record it, or to check that it is what was recorded)."""
    folder = Path(path)
    version = folder.resolve()  # once: a replace during the hashing cannot mix two versions' files
    missing = [name for name in ARTIFACT_FILES if not (version / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder} is not a deployment artifact: it lacks {missing}; "
                                "write one with pipeline.export.package.export_deployment")
    hashes = {p.name: file_sha256(p) for p in sorted(version.iterdir()) if p.is_file()}
    listing = "".join(f"{sha}  {name}\n" for name, sha in sorted(hashes.items()))
    return DeploymentArtifact(folder, hashes, sha256_text(listing))


def _write_json(path: Path, value: Mapping[str, Any]) -> None:
    # default=str: lineage may hold dates (training window), written as ISO strings.
    path.write_text(json.dumps(value, indent=2, default=str) + "\n")


def _config(module: nn.Module, columns: Sequence[str], actions: Sequence[str],
            hyperparameters: Mapping[str, Any]) -> dict[str, Any]:
    batch_shape = ["batch", *module.obs_shape]
    return {
        "format_version": FORMAT_VERSION,
        "algo": module.algo,
        "observation": {
            "name": INPUT_NAME, "dtype": "float32", "shape": batch_shape, "window": module.obs_shape[0],
            "features": list(columns),
            "normalization": {**module.normalization(), "file": NORMALIZER_FILE},
        },
        "action_space": {"type": "discrete", "n": len(actions), "meanings": list(actions)},
        "inputs": [{"name": INPUT_NAME, "dtype": "float32", "shape": batch_shape}],
        "outputs": [
            {"name": OUTPUT_NAMES[0], "dtype": "float32", "shape": ["batch", len(actions)]},
            {"name": OUTPUT_NAMES[1], "dtype": "int64", "shape": ["batch"]},
        ],
        "state": {"shapes": {}, "description": "none: each call reads a whole window of bars (LSTMs run over that "
                                               "window inside the call); nothing is carried between calls"},
        "hyperparameters": dict(hyperparameters),
        "files": {"onnx": ONNX_FILE, "torch_export": PROGRAM_FILE},
        "onnx_opset": ONNX_OPSET,
        "versions": {name: metadata.version(name) for name in ("torch", "onnx", "onnxscript")},
    }


def _normalizer_file(module: nn.Module, path: Path) -> None:
    state, settings = module.normalizer_state()
    save_file({k: v.contiguous() for k, v in state.items()}, str(path), metadata=settings)


def export_deployment(
    model_path: str | Path,
    out_dir: str | Path,
    *,
    feature_names: Sequence[str],
    lineage: Mapping[str, Any],
    card: ModelCard,
    agent_features: Sequence[str] = AGENT_FEATURES,
    action_meanings: Sequence[str] = INTRADAY_ACTIONS,
    algo: str = "clstm_ppo",
) -> DeploymentArtifact:
    """Write the deployment artifact of the registered model of `algo` at `model_path` to `out_dir`: a CLSTM
    checkpoint (file or checkpoint folder), an SB3 PPO `model.zip` (or its folder) or an `ensemble.json`.

    `feature_names`: the market feature columns of the observation, in order (the training dataset manifest's
    `feature_names`); the env's `agent_features` follow them in each row. `lineage` (code version, config hash,
    data version, training window, upstream partitions, ...) goes to lineage.json with the model file's sha256.
    """
    model = deployable(algo, model_path)
    module, model_file = model.module, model.model_file
    columns = (*feature_names, *agent_features)
    if len(columns) != module.obs_shape[-1] or len(set(columns)) != len(columns):
        raise ValueError(
            f"the model reads {module.obs_shape[-1]} observation columns, but feature_names + agent_features name "
            f"{len(columns)} (distinct: {len(set(columns))}): {list(columns)}; pass the market feature names of "
            "the dataset the model was trained on (its manifest's feature_names), without the agent features"
        )
    if len(action_meanings) != module.n_actions:
        raise ValueError(f"the model has {module.n_actions} actions, action_meanings names {len(action_meanings)}: "
                         f"{list(action_meanings)}")
    model_sha = file_sha256(model_file)
    if lineage.get("model_sha256", model_sha) != model_sha:
        raise ValueError(f"lineage says model_sha256={lineage['model_sha256']}, but {model_file} has {model_sha}")

    config = _config(module, columns, action_meanings, model.hyperparameters)
    out = Path(out_dir)
    with replacing(out) as staging:
        program = export_program(module)
        save_program(program, staging / PROGRAM_FILE)
        save_onnx(program, staging / ONNX_FILE)
        _normalizer_file(module, staging / NORMALIZER_FILE)
        _write_json(staging / CONFIG_FILE, config)
        _write_json(staging / LINEAGE_FILE, {**lineage, "model_file": model_file.name, "model_sha256": model_sha})
        (staging / CARD_FILE).write_text(render_model_card(card, config))
        for written in staging.iterdir():
            written.chmod(0o644)  # safetensors writes its file private to this user; the artifact is for readers
    return read_artifact(out)
