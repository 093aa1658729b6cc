"""Model artifacts are immutable: one folder per model_id, never written again once a registry row points at it.

Retraining a day with another config gets another id and another folder, so every registry row keeps loading the
weights it was registered (and maybe promoted) with; the same config again keeps the registered model instead of
training over it; a folder that no intact row points at (a crash before registration) is cleared before training.
Real SB3 runs through the `sb3_baselines` asset on the landed daily bars, with tiny budgets.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import dagster as dg
import pytest
from conftest import materialized_metadata
from test_assets_feature_lookback import daily_bar_lake
from test_assets_training_files import (
    DAY,
    FEATURES,
    GATE_DAYS,
    INTRADAY,
    PORTFOLIO,
    SELECTION_DAYS,
    WINDOW_DAYS,
)

from assets.training import DATASET_KEY
from assets.training_sb3 import BASELINES_KEY
from pipeline.backtest.inputs import load_registered
from pipeline.definitions import build_definitions
from pipeline.lake import Warehouse
from pipeline.model_store import fresh_model_dir, model_dir, registered_artifact
from pipeline.registry import ModelRecord, file_sha256, read_registry, register_model
from resources.compute import ComputeResource
from resources.warehouse import WarehouseResource

PPO_STEPS = (128, 192)  # the two configs of the day: only SB3 PPO's budget differs
SAC_STEPS = 200


def _baselines_config(ppo_steps: int) -> dict:
    return {"config": {"sac_timesteps": SAC_STEPS, "ppo_timesteps": ppo_steps,
                       "ppo": {"n_steps": 64, "batch_size": 64},
                       "intraday_env": INTRADAY, "portfolio_env": PORTFOLIO}}


@pytest.fixture(scope="module")
def retrained(module_lake_env: dict[str, str], lake_cache: Path):
    """The day trained twice: SB3 PPO with two budgets, SAC with the same config both times."""
    lake = Path(module_lake_env["PIPELINE_DATA_LAKE"])
    daily_bar_lake(lake, lake_cache)
    assets = [a for a in build_definitions().assets if a.key in (DATASET_KEY, BASELINES_KEY)]
    resources = {"warehouse": WarehouseResource(), "compute": ComputeResource(torch_threads=1)}
    dataset = {"config": {"window_days": WINDOW_DAYS, "selection_days": SELECTION_DAYS, "gate_days": GATE_DAYS,
                          "features": FEATURES, "turbulence": "turbulence_index_daily"}}
    results = []
    for i, steps in enumerate(PPO_STEPS):
        ops = {"sb3_baselines": _baselines_config(steps)} | ({"training_dataset": dataset} if i == 0 else {})
        run_config = {"ops": ops}
        results.append(dg.materialize(assets, resources=resources, partition_key=DAY.isoformat(),
                                      run_config=run_config, selection=None if i == 0 else [BASELINES_KEY]))
        assert results[-1].success
    yield lake, [materialized_metadata(r, "sb3_baselines") for r in results], Warehouse(lake / "warehouse.duckdb")


def test_retraining_with_another_config_leaves_the_first_models_weights_loadable(retrained) -> None:
    lake, metas, store = retrained
    rows = [r for r in read_registry(store, DAY).to_dicts() if r["algo"] == "sb3_ppo"]
    assert sorted(r["model_id"] for r in rows) == sorted(m["sb3_ppo/model_id"] for m in metas)
    assert len({r["artifact_path"] for r in rows}) == 2  # two folders, one per model_id
    for row in rows:
        assert Path(row["artifact_path"]).parent == model_dir(lake / "artifacts", row["model_id"])
        assert file_sha256(row["artifact_path"]) == row["sha256"]
        assert load_registered(row).model_id == row["model_id"]  # the sha256 check passes: nothing overwrote it


def test_the_same_config_again_keeps_the_registered_model(retrained) -> None:
    _, metas, store = retrained
    (sac,) = [r for r in read_registry(store, DAY).to_dicts() if r["algo"] == "sb3_sac"]
    first, second = metas
    assert second["sb3_sac/kept"] is True and "sb3_sac/kept" not in first
    assert first["sb3_sac/model_id"] == second["sb3_sac/model_id"] == sac["model_id"]
    # SB3's model.zip differs from run to run (zip timestamps): training again would have changed the file.
    assert first["sb3_sac/sha256"] == second["sb3_sac/sha256"] == sac["sha256"] == file_sha256(sac["artifact_path"])


def _record(artifact: Path, sha256: str) -> ModelRecord:
    day = date(2024, 7, 5)
    return ModelRecord(trading_day=day, algo="sb3_ppo", member="seed0", artifact_path=str(artifact), sha256=sha256,
                       config_hash="c" * 64, code_version="test", data_version="d" * 64, window_start=day,
                       window_end=day)


def test_a_folder_no_intact_row_points_at_is_cleared_before_training(tmp_path: Path) -> None:
    store, artifacts = Warehouse(tmp_path / "warehouse.duckdb"), tmp_path / "artifacts"
    model_id = _record(tmp_path / "x", "").model_id
    assert registered_artifact(store, model_id) is None  # no registry yet
    crashed = model_dir(artifacts, model_id)
    crashed.mkdir(parents=True)
    (crashed / "model.zip").write_bytes(b"half a model")  # a run that died before registering
    folder = fresh_model_dir(artifacts, model_id)
    assert folder == crashed and list(folder.iterdir()) == []
    (folder / "model.zip").write_bytes(b"weights")
    register_model(store, _record(folder / "model.zip", file_sha256(folder / "model.zip")))
    assert registered_artifact(store, model_id)["model_id"] == model_id
    (folder / "model.zip").write_bytes(b"changed by hand")  # a row nothing can load any more is not kept
    assert registered_artifact(store, model_id) is None
