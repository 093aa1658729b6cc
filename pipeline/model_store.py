"""Where trained models live: one folder per `model_id`, `<artifacts>/models/<model_id>/`, written once.

The model id is a function of (algo, member, trading day, config hash, data version), so it is known before
training and names the folder the trainer writes to. Once a registry row points at a folder's artifact, the folder
is never written again: retraining a day with another config (seed, budget, hyperparameters) gets another id and
another folder, so a `production` row keeps loading the weights it was judged on. Materializing the same model
again (same algo, member, day, config and data) keeps the registered one instead of training over it
(`registered_artifact`). A folder without an intact registered artifact (a crash before registration, a file
changed by hand) is nobody's model: it is cleared before training again (`fresh_model_dir`).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from pipeline.lake import Warehouse
from pipeline.registry import REGISTRY_TABLE, file_sha256, get_model

MODELS_DIR = "models"


def model_dir(artifacts: str | Path, model_id: str) -> Path:
    """The folder of `model_id` under the lake's artifacts folder."""
    return Path(artifacts) / MODELS_DIR / model_id


def registered_artifact(store: Warehouse, model_id: str) -> dict[str, Any] | None:
    """The registry row of `model_id` if it is registered and its artifact is in place with its registered sha256;
    None if it is not registered (or its artifact is gone or changed: a row nothing can load)."""
    if not store.table_exists(REGISTRY_TABLE):
        return None
    try:
        row = get_model(store, model_id)
    except ValueError:
        return None
    artifact = Path(row["artifact_path"])
    return row if artifact.is_file() and file_sha256(artifact) == row["sha256"] else None


def fresh_model_dir(artifacts: str | Path, model_id: str) -> Path:
    """An empty folder for training `model_id`, which `registered_artifact` found not registered: whatever a crashed
    or broken earlier run left there is removed first."""
    folder = model_dir(artifacts, model_id)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    return folder
