"""What an evaluation runs: registered models as policies, and the market of the days they are judged on.

A model is judged only on data it never saw: the day after its training window (walk-forward backtest) or the
gate days of its own dataset (the promotion gate); it is chosen on the selection days of its dataset. Its
observations are built exactly as in training: the same features, turbulence column and symbols as its dataset's
manifest, and the same intraday env settings as its `TrainingRun`; the normalization statistics are the model's
own (fitted on its training window), inside it. A model compared on another model's days (the production model on
a candidate's gate days) is run on its own columns, loaded from the warehouse (`market_for_days`).

Every intraday kind loads the same way (`INTRADAY_KINDS`): a CLSTM-PPO checkpoint, an SB3 PPO baseline folder
(`load_baseline`, which unpickles nothing) or an ensemble's `ensemble.json` (its members by their own code); an
ensemble was trained on its members' env settings and dataset.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from pipeline.agents.ensemble import PolicyEnsemble, load_member
from pipeline.agents.sb3 import META_FILE, MODEL_FILE
from pipeline.envs.intraday import IntradayConfig
from pipeline.envs.tensors import MarketTensors
from pipeline.envs.warehouse_loader import MarketLoaderConfig, load_market_tensors
from pipeline.lake import Warehouse
from pipeline.registry import file_sha256
from pipeline.training.dataset import load_dataset, load_manifest
from pipeline.training.ensembles import MEMBER_KINDS, member_env_config
from pipeline.training.run import TrainingRun

INTRADAY_KINDS = ("clstm_ppo", "sb3_ppo", "ensemble")
"""The registry algorithms of the intraday models a day's candidate is chosen among (SAC, the portfolio
allocator, and the options agent are products of their own)."""
_ALGO_OF_MEMBER_KIND = {kind: algo for algo, kind in MEMBER_KINDS.items()}


@dataclass(frozen=True)
class RegisteredPolicy:
    """A registered intraday model (any of `INTRADAY_KINDS`), loaded, with the env settings and dataset it was
    trained on."""

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
    env_config, dataset_dir = trained_on(row["algo"], artifact)
    return RegisteredPolicy(row["model_id"], load_policy(row["algo"], artifact), env_config, dataset_dir, row)


def _kind(algo: str) -> None:
    if algo not in INTRADAY_KINDS:
        raise ValueError(f"{algo!r} is not an intraday model kind this evaluation runs; use one of {INTRADAY_KINDS}")


def load_policy(algo: str, artifact: Path) -> Any:
    """The policy of a registered artifact: a CLSTM-PPO checkpoint, an SB3 `model.zip`, an `ensemble.json`."""
    _kind(algo)
    if algo == "ensemble":
        return PolicyEnsemble.load(artifact)
    return load_member(MEMBER_KINDS[algo], artifact if algo == "clstm_ppo" else artifact.parent)


def trained_on(algo: str, artifact: Path) -> tuple[IntradayConfig, Path]:
    """The intraday env settings and the dataset folder the model of a registered artifact was trained with."""
    _kind(algo)
    if algo == "clstm_ppo":
        run = TrainingRun.load(artifact.parent)
        return run.env, run.dataset_dir
    if algo == "sb3_ppo":
        saved = json.loads((artifact.parent / META_FILE).read_text())
        return member_env_config(algo, artifact), Path(saved["env_kwargs"]["dataset_dir"])
    first = json.loads(artifact.read_text())["members"][0]
    member_algo, path = _ALGO_OF_MEMBER_KIND[first["kind"]], artifact.parent / first["path"]
    return trained_on(member_algo, path if member_algo == "clstm_ppo" else path / MODEL_FILE)


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
