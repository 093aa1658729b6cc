"""Nothing that chooses reads a gate day: two saved datasets that differ only in their gate days' data give the
trainer the same checkpoint choice (the same bytes, the same best scores) and the candidate selection the same
choice, while the gate itself sees the difference."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from pipeline.agents.checkpoints import read_checkpoint
from pipeline.backtest.inputs import dataset_part
from pipeline.backtest.runner import run_intraday
from pipeline.backtest.selection import select_candidate
from pipeline.backtest.strategies import BandMomentum
from pipeline.contract.calendar import trading_days
from pipeline.envs.intraday import IntradayConfig
from pipeline.envs.tensors import synthetic_market_tensors
from pipeline.training.dataset import MARKET_FILE, TrainingDataset, save_dataset, session_normalization
from pipeline.training.run import DatasetData, TrainingRun
from pipeline.training.trainer import train

DAYS = [d.isoformat() for d in trading_days("2024-07-01", "2024-07-11")]  # 8 sessions
PARTS = {"train": DAYS[:4], "selection": DAYS[4:6], "gate": DAYS[6:]}
ENV = {"window": 8, "loss_cut": None, "profit_lock": None}


def _dataset(folder: Path) -> Path:
    market = synthetic_market_tensors(days=len(DAYS), alpha=0.25, seed=2, minutes=60, symbols=("AAA", "BBB"))
    market = replace(market, trading_days=tuple(DAYS))
    parts = {name: market.subset(days=[DAYS.index(d) for d in days]) for name, days in PARTS.items()}
    manifest = {"data_version": "test", "end_day": DAYS[-1], "window": [DAYS[0], DAYS[-1]], "train_days":
                PARTS["train"], "embargo_days": [], "selection_days": PARTS["selection"],
                "gate_days": PARTS["gate"], "symbols": list(market.symbols),
                "feature_names": list(market.feature_names), "config": {}}
    return save_dataset(TrainingDataset(parts, session_normalization(parts["train"]), manifest), folder)


def _scramble_gate(folder: Path) -> None:
    """Every gate tensor of a saved dataset replaced: prices moved, features turned to noise."""
    tensors = load_file(str(folder / MARKET_FILE))
    generator = torch.Generator().manual_seed(0)
    for name in ("bid", "ask"):
        tensors[f"gate.{name}"] = tensors[f"gate.{name}"] * 1.07
    tensors["gate.features"] = torch.randn(tensors["gate.features"].shape, generator=generator)
    save_file(tensors, str(folder / MARKET_FILE))


def _train(dataset: Path, out: Path) -> dict:
    run = TrainingRun.build(DatasetData(str(dataset)), total_timesteps=1280, preset="small_budget",
                            agent={"torch_threads": 1, "validate_every": 1}, env=IntradayConfig(**ENV), num_envs=8,
                            selection_envs=4)
    return train(run.with_output(out))


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path, dict]]:
    root = tmp_path_factory.mktemp("isolation")
    out = {}
    for name in ("original", "scrambled"):
        dataset = _dataset(root / name / "dataset")
        if name == "scrambled":
            _scramble_gate(dataset)
        out[name] = (dataset, root / name / "model", _train(dataset, root / name / "model"))
    return out


def test_the_scramble_reached_the_gate_days(runs) -> None:
    (a, _, _), (b, _, _) = runs["original"], runs["scrambled"]
    assert not torch.equal(dataset_part(a, "gate").features, dataset_part(b, "gate").features)
    for part in ("train", "selection"):
        assert torch.equal(dataset_part(a, part).features, dataset_part(b, part).features)
    # The gate sees the difference: the same rule earns differently on the two gate parts.
    rule = BandMomentum(10)
    gate_a, gate_b = (run_intraday(dataset_part(d, "gate"), rule, "rule") for d in (a, b))
    assert not gate_a["ret"].equals(gate_b["ret"])


def test_a_gate_days_data_changes_no_checkpoint_choice(runs) -> None:
    (_, model_a, summary_a), (_, model_b, summary_b) = runs["original"], runs["scrambled"]
    assert summary_a["selected"] == "best_composite (validation)"
    assert summary_a["best"] == summary_b["best"] and summary_a["validation"] == summary_b["validation"]
    files = ["model.safetensors", *(f"checkpoints/{c}.safetensors" for c in ("best_composite", "best_sharpe", "latest"))]
    for name in files:
        tensors_a, meta_a = read_checkpoint(model_a / name)
        tensors_b, meta_b = read_checkpoint(model_b / name)
        assert tensors_a.keys() == tensors_b.keys() and all(torch.equal(v, tensors_b[k]) for k, v in tensors_a.items())
        # The same metadata but for where each run wrote its checkpoints.
        assert _without_paths(meta_a) == _without_paths(meta_b), name
    assert json.loads((model_a / "model.json").read_text())["best"] == summary_a["best"]


def _without_paths(meta: dict) -> dict:
    config = {k: v for k, v in meta.get("config", {}).items() if not k.endswith("_dir")}
    return meta | {"config": config}


def test_a_gate_days_data_changes_no_candidate_choice(runs) -> None:
    from pipeline.agents.clstm_ppo import CLSTMPPO

    choices = []
    for dataset, model, _ in runs.values():
        models = [type("Model", (), {"model_id": "clstm", "policy": CLSTMPPO.load(model / "model.safetensors"),
                                     "env_config": IntradayConfig(**ENV)})(),
                  type("Model", (), {"model_id": "rule", "policy": BandMomentum(10),
                                     "env_config": IntradayConfig(**ENV)})()]
        selection, _ = select_candidate(models, dataset_part(dataset, "selection"))
        choices.append((selection.chosen, selection.scores))
    assert choices[0] == choices[1]
