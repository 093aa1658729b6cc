"""The options agent as Dagster assets on a temp lake: options_dataset -> options_policy (the trainer through Pipes)
-> options_backtest (gate days, every baseline) -> options_deployment (a gate of 2 days cannot pass: rejected with
the reasons), and the deployment package of an options model (ONNX agrees with the agent)."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest
import torch
from conftest import assets_in_groups, ingest_history, materialized_metadata, pipeline_env

from assets.options_evaluation import GATE_RETURNS, METRICS
from assets.options_training import OPTIONS_ALGO, OPTIONS_GROUP
from pipeline.agents.clstm_ppo import CLSTMPPO
from pipeline.backtest.options_rules import OPTIONS_BASELINES
from pipeline.backtest.options_runner import export_options_deployment, options_production_as_of
from pipeline.contract.calendar import trading_days
from pipeline.envs.options import OptionsTradingEnv
from pipeline.export.package import run_onnx
from pipeline.lake import Warehouse
from pipeline.registry import read_registry
from pipeline.training.options_dataset import load_options_manifest, load_options_part
from pipeline.training.run import TrainingRun
from resources.compute import ComputeResource
from resources.sources import MarketDataResource
from resources.warehouse import WarehouseResource

DAYS = trading_days(date(2024, 7, 8), date(2024, 7, 12))
DAY = DAYS[-1].isoformat()
RUN_CONFIG = {"ops": {
    "options_dataset": {"config": {"underlying": "SPY", "window_days": 5, "embargo_days": 0, "selection_days": 1,
                                   "gate_days": 2, "strikes": 5}},
    "options_policy": {"config": {"num_envs": 4, "selection_envs": 2, "agent": {"num_steps": 8, "hidden": 8},
                                  "env": {"action_set": 91, "window": 3}}},
    "options_backtest": {"config": {"n_boot": 50}},
    "options_deployment": {"config": {"n_boot": 50}},
}}


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory):
    env = pipeline_env(tmp_path_factory.mktemp("options"))
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        market_data = MarketDataResource(snapshot_minutes=60)
        ingest_history(DAYS, market_data)
        resources = {"warehouse": WarehouseResource(), "market_data": market_data,
                     "pipes_subprocess_client": dg.PipesSubprocessClient(),
                     "compute": ComputeResource(total_timesteps=64, torch_threads=1)}
        result = dg.materialize(assets_in_groups(OPTIONS_GROUP), resources=resources, partition_key=DAY,
                                instance=dg.DagsterInstance.ephemeral(), run_config=RUN_CONFIG)
        assert result.success
        yield Path(env["PIPELINE_DATA_LAKE"]), result


def test_the_dataset_is_the_split_window_of_one_underlying(loop) -> None:
    lake, result = loop
    meta = materialized_metadata(result, "options_dataset")
    iso = [d.isoformat() for d in DAYS]
    assert meta["train_days"] == iso[:2] and meta["selection_days"] == iso[2:3] and meta["gate_days"] == iso[3:]
    gate = load_options_part(lake / "artifacts" / "options_datasets" / DAY, "gate")
    assert gate.shape[0] == 2 and gate.shape[3] == 5 and meta["underlying"] == "SPY"


def test_the_policy_is_registered_and_judged_against_every_baseline(loop) -> None:
    lake, result = loop
    store = Warehouse(lake / "warehouse.duckdb")
    (row,) = read_registry(store).filter(pl.col("algo") == OPTIONS_ALGO).to_dicts()
    assert materialized_metadata(result, "options_policy")["model_id"] == row["model_id"]
    run = TrainingRun.load(Path(row["artifact_path"]).parent)
    assert run.options_env.action_set == 91 and run.data.kind == "options"
    gate = store.query(f"SELECT * FROM {GATE_RETURNS}")
    assert sorted(gate["strategy"].unique()) == sorted(["candidate", *OPTIONS_BASELINES])
    assert gate.group_by("strategy").len()["len"].to_list() == [2] * 5
    assert gate.filter(pl.col("strategy") == "flat")["ret"].to_list() == [0.0, 0.0]
    assert set(store.query(f"SELECT DISTINCT \"window\" FROM {METRICS}")["window"]) == {"gate"}
    # Two gate days give no interval: the gate cannot pass, and the model is rejected with the reason.
    assert materialized_metadata(result, "options_backtest")["gate_passed"] is False
    row = store.query("SELECT * FROM models.registry WHERE model_id = ?", [row["model_id"]]).to_dicts()[0]
    assert row["status"] == "rejected" and "against short_straddle" in row["status_reason"]
    assert options_production_as_of(store, date(2024, 7, 15)) is None


def test_an_options_model_deploys_with_the_normalization_inside(loop, tmp_path: Path) -> None:
    lake, _ = loop
    store = Warehouse(lake / "warehouse.duckdb")
    (row,) = read_registry(store).filter(pl.col("algo") == OPTIONS_ALGO).to_dicts()
    run = TrainingRun.load(Path(row["artifact_path"]).parent)
    manifest = load_options_manifest(run.dataset_dir)
    metrics = store.query(f"SELECT * FROM {METRICS}")
    artifact = export_options_deployment(row["model_id"], row["artifact_path"], tmp_path / "deploy", manifest, run,
                                         metrics, {"partition": DAY}, ["gate: not judged in this test"])
    config = json.loads((artifact.path / "config.json").read_text())
    assert config["action_space"]["n"] == 91 and config["action_space"]["meanings"][38] == "short_straddle_e0"
    env = OptionsTradingEnv(load_options_part(run.dataset_dir, "gate"), num_envs=2, config=run.options_env)
    obs, _ = env.reset(seed=0)
    agent = CLSTMPPO.load(row["artifact_path"])
    for _ in range(3):
        expected = agent.predict(obs.numpy(), deterministic=True)[0]
        probs = run_onnx(artifact.path, obs.numpy())
        assert np.array_equal(probs.argmax(-1), np.asarray(expected))
        obs, *_ = env.step(torch.as_tensor(expected))
