"""What an evaluation runs: registered models as policies, and the market of the days they are judged on.

A model is judged only on data it never saw: the day after its training window (walk-forward backtest) or the
gate days of its own dataset (the promotion gate); it is chosen on the selection days of its dataset. Its
observations are built exactly as in training: the same features, turbulence column and symbols as its dataset's
manifest, and the same intraday env settings as its `TrainingRun`; the normalization statistics are the model's
own (fitted on its training window), inside it. A model compared on another model's days (the production model on
a candidate's gate days) is run on its own columns, loaded from the warehouse (`market_for_days`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from pipeline.agents.ensemble import load_member
from pipeline.envs.intraday import IntradayConfig
from pipeline.envs.tensors import MarketTensors
from pipeline.envs.warehouse_loader import MarketLoaderConfig, load_market_tensors
from pipeline.lake import Warehouse
from pipeline.registry import file_sha256
from pipeline.training.dataset import load_dataset, load_manifest
from pipeline.training.run import TrainingRun


@dataclass(frozen=True)
class RegisteredPolicy:
    """A registered CLSTM-PPO model, loaded, with the env settings and dataset it was trained on."""

    model_id: str
    policy: Any
    env_config: IntradayConfig
    dataset_dir: Path
    row: dict[str, Any]


def load_registered(row: dict[str, Any]) -> RegisteredPolicy:
    """Load the model of a `models.registry` row; refuses a file whose sha256 is not the registered one."""
    artifact = Path(row["artifact_path"])
    if not artifact.is_file():
        raise ValueError(f"the artifact of {row['model_id']} is missing ({artifact}): re-materialize its training "
                         "partition")
    if file_sha256(artifact) != row["sha256"]:
        raise ValueError(f"the artifact of {row['model_id']} ({artifact}) changed since it was registered (sha256 "
                         "differs): re-materialize its training partition")
    run = TrainingRun.load(artifact.parent)
    return RegisteredPolicy(row["model_id"], load_member("clstm_ppo", artifact), run.env, run.dataset_dir, row)


def loader_config(dataset_dir: str | Path) -> MarketLoaderConfig:
    """The loader settings (features, turbulence, imputed spread) a dataset was built with."""
    saved = load_manifest(dataset_dir)["config"]["loader"]
    return MarketLoaderConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()})


def market_for_days(store: Warehouse, days: Sequence[date | str], dataset_dir: str | Path,
                    symbols: Sequence[str] | None = None) -> MarketTensors:
    """Trading days `days` as the models of `dataset_dir` observe them: their features and turbulence column, on
    `symbols` (default: the dataset's symbols)."""
    chosen = list(symbols) if symbols is not None else load_manifest(dataset_dir)["symbols"]
    return load_market_tensors(store, [date.fromisoformat(str(d)) for d in days], chosen,
                               loader_config(dataset_dir))


def dataset_part(dataset_dir: str | Path, part: str) -> MarketTensors:
    """One part of a saved dataset: `train` (what the baselines tune their weights and bands on), `selection`
    (what chooses among models) or `gate` (what the promotion gate alone reads)."""
    return load_dataset(dataset_dir, parts=(part,)).part(part)


def same_observations(a: str | Path, b: str | Path) -> bool:
    """Whether models trained on datasets `a` and `b` observe the same columns (so one can run on the other's)."""
    left, right = load_manifest(a), load_manifest(b)
    return left["feature_names"] == right["feature_names"]
