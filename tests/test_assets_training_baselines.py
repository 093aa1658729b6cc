"""SB3 baselines and the ensemble as real Dagster runs on a temp lake of synthetic data: what each registers, where
its artifacts are, and that the metrics it reports are those of the saved models, measured again here.

Budgets are tiny (a couple of thousand steps): this is about plumbing and evidence, not about learning.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
import torch
from conftest import (
    DATA_GROUPS,
    assets_in_groups,
    build_once,
    ingest_history,
    lake_cache_key,
    materialized_metadata,
)
from test_assets_training import HISTORY, HISTORY_LAKE

from assets.training import build_training_assets
from assets.training_sb3 import build_training_baseline_assets
from pipeline.agents.ensemble import PolicyEnsemble
from pipeline.agents.policy_eval import evaluate_policy, final_pnl
from pipeline.agents.sb3 import load_baseline
from pipeline.envs.intraday import IntradayConfig
from pipeline.lake import Warehouse
from pipeline.registry import ModelRecord, file_sha256, read_registry, register_model
from pipeline.training.dataset import load_dataset
from pipeline.training.ensembles import build_ensemble, registered_members
from pipeline.training.env_factories import intraday_env, portfolio_env
from pipeline.training.sb3 import EvaluatedPolicy, portfolio_return, torch_threads
from resources.compute import ComputeResource
from resources.warehouse import WarehouseResource

DAY = "2024-07-05"
# HISTORY: the market of test_assets_training.py (the session builds it once, under HISTORY_LAKE)
INTRADAY = {"window": 8, "loss_cut": None, "profit_lock": None}  # what the CLSTM and SB3 PPO defaults train on


@pytest.fixture(scope="module")
def lake(module_lake_env: dict[str, str], lake_cache: Path):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PIPELINE_SYNTHETIC_SNAPSHOT_MINUTES", "390")  # one option chain a day: options are not used here
        build_once(lake_cache, lake_cache_key(HISTORY_LAKE, days=HISTORY), Path(module_lake_env["PIPELINE_DATA_LAKE"]),
                   lambda: ingest_history(HISTORY))
        days = assets_in_groups(*DATA_GROUPS)[0].partitions_def
        training = [*build_training_assets(days), *build_training_baseline_assets(days)]
        resources = {"warehouse": WarehouseResource(), "pipes_subprocess_client": dg.PipesSubprocessClient(),
                     "compute": ComputeResource(total_timesteps=2048, torch_threads=1)}
        run_config = {"ops": {"clstm_ppo_policy": {"config": {"num_envs": 16}},
                              "sb3_baselines": {"config": {"ppo_timesteps": 1024, "sac_timesteps": 300,
                                                           "ppo": {"n_steps": 512}}}}}
        threads = torch.get_num_threads()
        result = dg.materialize(training, resources=resources, partition_key=DAY, run_config=run_config)
        assert result.success
        # SB3 trained in this process with the compute resource's 1 thread, and gave the process its own back.
        assert torch.get_num_threads() == threads
        store = Warehouse(Path(module_lake_env["PIPELINE_DATA_LAKE"]) / "warehouse.duckdb")
        yield Path(module_lake_env["PIPELINE_DATA_LAKE"]), result, store


def _rows(store: Warehouse, result: dg.ExecuteInProcessResult) -> dict[str, dict]:
    """The registry rows of DAY trained on the fixture's dataset, by algorithm."""
    version = materialized_metadata(result, "training_dataset")["data_version"]
    rows = read_registry(store, date.fromisoformat(DAY)).to_dicts()
    return {row["algo"]: row for row in rows if row["data_version"] == version}


def test_baselines_are_registered_candidates_with_their_lineage(lake) -> None:
    root, result, store = lake
    meta, dataset = materialized_metadata(result, "sb3_baselines"), materialized_metadata(result, "training_dataset")
    rows = _rows(store, result)
    assert set(rows) == {"clstm_ppo", "sb3_ppo", "sb3_sac", "ensemble"}
    for algo in ("sb3_ppo", "sb3_sac"):
        row = rows[algo]
        folder = root / "artifacts" / "models" / row["model_id"]  # one folder per model, named by its id
        assert (row["member"], row["status"], row["artifact_path"]) == ("seed0", "candidate", str(folder / "model.zip"))
        assert row["model_id"] == meta[f"{algo}/model_id"] and meta[f"{algo}/artifact"] == str(folder)
        assert row["sha256"] == file_sha256(folder / "model.zip") == meta[f"{algo}/sha256"]
        assert row["data_version"] == dataset["data_version"] == meta["data_version"]
        assert (row["window_start"], row["window_end"]) == (HISTORY[-41], HISTORY[-1])
        assert row["code_version"] and len(row["config_hash"]) == 64
        saved = json.loads((folder / "baseline.json").read_text())
        assert saved["env_kwargs"]["part"] == "train" and saved["env_kwargs"]["dataset_dir"] == dataset["path"]
    assert meta["sb3_ppo/num_timesteps"] == 1024 and meta["sb3_sac/num_timesteps"] == 300


def test_baseline_selection_metrics_are_the_saved_models(lake) -> None:
    root, result, store = lake
    meta, rows = materialized_metadata(result, "sb3_baselines"), _rows(store, result)
    dataset = root / "artifacts" / "datasets" / DAY
    # Another env count than the asset's: the evaluation walk visits every episode once whatever the count. The
    # policies run in float32 on batches of another size, which round differently (measured: 4.5e-6 relative).
    close = {"rel": 1e-5, "abs": 1e-7}
    walks = {"sb3_ppo": (intraday_env(dataset, "selection", num_envs=5, **INTRADAY), final_pnl, 10),
             "sb3_sac": (portfolio_env(dataset, "selection", num_envs=3), portfolio_return, 5)}
    for algo, (env, outcome, episodes) in walks.items():
        policy = load_baseline(Path(rows[algo]["artifact_path"]).parent)
        with torch_threads(1):  # small batches: more threads only contend on a busy machine
            again = evaluate_policy(EvaluatedPolicy.of(policy), env, outcome=outcome)
        assert again["episodes"] == episodes  # 5 selection days x 2 symbols (intraday), 5 days (portfolio)
        for key, value in again.items():
            assert meta[f"{algo}/selection/{key}"] == pytest.approx(value, **close), (algo, key)
        assert json.loads(rows[algo]["metrics"])["selection"] == pytest.approx(again, **close)


def test_ensemble_weights_its_members_by_selection_score(lake) -> None:
    root, result, store = lake
    meta, rows = materialized_metadata(result, "ensemble_policy"), _rows(store, result)
    members = [rows["clstm_ppo"]["model_id"], rows["sb3_ppo"]["model_id"]]
    assert sorted(meta["members"]) == sorted(members)
    scores = {row["model_id"]: json.loads(row["metrics"])["selection"]["sharpe"] for row in rows.values()
              if row["model_id"] in members}
    weights = dict(zip(meta["members"], meta["weights"], strict=True))
    assert sum(weights.values()) == pytest.approx(1.0) and min(weights.values()) > 0
    ranked_by_score = sorted(members, key=lambda m: scores[m])
    ranked_by_weight = sorted(members, key=lambda m: weights[m])
    assert ranked_by_score == ranked_by_weight
    assert meta["scores"] == [scores[m] for m in meta["members"]]
    manifest = json.loads((root / "artifacts" / "models" / meta["model_id"] / "ensemble.json").read_text())
    assert [m["weight"] for m in manifest["members"]] == meta["weights"]
    assert {m["kind"] for m in manifest["members"]} == {"clstm_ppo", "sb3"}


def test_ensemble_is_registered_and_its_metrics_are_the_saved_ensembles(lake) -> None:
    root, result, store = lake
    meta, row = materialized_metadata(result, "ensemble_policy"), _rows(store, result)["ensemble"]
    folder = root / "artifacts" / "models" / row["model_id"]
    assert (row["model_id"], row["status"], row["member"]) == (meta["model_id"], "candidate", "k2")
    assert row["sha256"] == file_sha256(folder / "ensemble.json") == meta["sha256"]
    assert row["data_version"] == materialized_metadata(result, "training_dataset")["data_version"] == meta["data_version"]
    ensemble = PolicyEnsemble.load(folder)
    np.testing.assert_allclose(ensemble.weights, meta["weights"])
    env = intraday_env(root / "artifacts" / "datasets" / DAY, "selection", num_envs=8, **INTRADAY)
    again = evaluate_policy(EvaluatedPolicy.of(ensemble), env)
    assert again["episodes"] == 10
    for key, value in again.items():
        assert meta[f"selection/{key}"] == pytest.approx(value), key
    assert json.loads(row["metrics"])["members"] == meta["members"]


def test_an_ensemble_of_one_member_is_refused(lake, tmp_path: Path) -> None:
    root, _, store = lake
    version = load_dataset(root / "artifacts" / "datasets" / DAY).data_version
    day = date.fromisoformat(DAY)
    assert len(registered_members(store, day, version)) == 2
    assert registered_members(store, day, "another data version") == []
    (only,) = registered_members(store, day, version, algos=("sb3_ppo",))
    with pytest.raises(ValueError, match="at least 2 members"):
        build_ensemble([only], tmp_path)


def test_members_are_the_registered_models_whose_artifacts_are_unchanged(lake) -> None:
    _, result, store = lake
    rows = _rows(store, result)
    day, version = date.fromisoformat(DAY), "a later dataset of the same day"
    for algo, sha256 in (("sb3_ppo", rows["sb3_ppo"]["sha256"]), ("clstm_ppo", "0" * 64)):
        row = rows[algo]
        register_model(store, ModelRecord(
            trading_day=day, algo=algo, member="seed0", artifact_path=row["artifact_path"], sha256=sha256,
            config_hash=row["config_hash"], code_version=row["code_version"], data_version=version,
            window_start=row["window_start"], window_end=row["window_end"],
            metrics={"selection": {"sharpe": 1.5}}))
    # The CLSTM row's file is not the one it registered (a later run wrote over it): it is no member.
    (member,) = registered_members(store, day, version)
    assert (member.algo, member.score, member.kind) == ("sb3_ppo", 1.5, "sb3")
    assert member.path == Path(rows["sb3_ppo"]["artifact_path"]).parent
    assert member.env_config == IntradayConfig(**INTRADAY)
