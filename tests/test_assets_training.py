"""The training group as real Dagster runs on a temp lake of synthetic data: the dataset asset, CLSTM-PPO through
Dagster Pipes (the trainer in its own process), the registry row, and the README's CLI command.

A small step budget keeps this about plumbing and evidence (what is logged, saved, registered and reported);
whether the trained policy beats its baselines is test_assets_training_learns.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import dagster as dg
import pytest
from conftest import (
    REPO_ROOT,
    assets_in_groups,
    build_once,
    ingest_history,
    lake_cache_key,
    materialized_metadata,
    pipeline_env,
)

from assets.training import CLSTMPolicyConfig
from pipeline.agents.clstm_ppo import CLSTMPPO
from pipeline.agents.policy_eval import evaluate_policy
from pipeline.agents.ppo_config import PRESETS
from pipeline.contract.calendar import trading_days
from pipeline.lake import Warehouse
from pipeline.registry import file_sha256, read_registry
from pipeline.training.env_factories import intraday_env
from pipeline.training.run import DatasetData, TrainingRun
from resources.compute import ComputeResource
from resources.warehouse import WarehouseResource

DAY = "2024-07-05"
HISTORY = trading_days("2024-05-01", DAY)  # the default 41-day window ending at DAY and a few days before it
# The synthetic market (SPY, QQQ; one option chain a day) over HISTORY: test_assets_training_baselines.py ingests
# the same, so the session builds it once (the key, made in the build's environment, holds the rest).
HISTORY_LAKE = "synthetic-history"
WINDOW = [d.isoformat() for d in HISTORY[-41:]]
STEPS = 8192
TRAINING = {"training_dataset", "clstm_ppo_policy"}
LAUNCHPAD_LR = 2.5e-4  # not the small_budget preset's (1e-3)


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory, lake_cache: Path):
    env = pipeline_env(tmp_path_factory.mktemp("training"))
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        mp.setenv("PIPELINE_SYNTHETIC_SNAPSHOT_MINUTES", "390")
        build_once(lake_cache, lake_cache_key(HISTORY_LAKE, days=HISTORY), Path(env["PIPELINE_DATA_LAKE"]),
                   lambda: ingest_history(HISTORY))
        instance = dg.DagsterInstance.ephemeral()
        resources = {"warehouse": WarehouseResource(), "pipes_subprocess_client": dg.PipesSubprocessClient(),
                     "compute": ComputeResource(total_timesteps=STEPS, torch_threads=1)}
        run_config = {"ops": {"clstm_ppo_policy": {"config": {"num_envs": 16, "agent": {"actor_lr": LAUNCHPAD_LR}}}}}
        clstm = [a for a in assets_in_groups("training") if a.key.path[-1] in TRAINING]
        result = dg.materialize(clstm, resources=resources, partition_key=DAY,
                                instance=instance, run_config=run_config)
        yield env, result, instance


def test_dataset_is_the_window_ending_at_the_partition(lake) -> None:
    env, result, _ = lake
    meta = materialized_metadata(result, "training_dataset")
    assert meta["train_days"] == WINDOW[:20] and meta["embargo_days"] == WINDOW[20:21]
    assert meta["selection_days"] == WINDOW[21:26] and meta["gate_days"] == WINDOW[26:] and WINDOW[-1] == DAY
    folder = Path(env["PIPELINE_DATA_LAKE"]) / "artifacts" / "datasets" / DAY
    assert meta["path"] == str(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "market.safetensors",
                                                       "normalization.safetensors"]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert meta["data_version"] == manifest["data_version"] and meta["symbols"] == ["QQQ", "SPY"]
    (event,) = result.get_asset_materialization_events()[:1]
    assert event.materialization.tags["dagster/data_version"] == manifest["data_version"]


def test_trainer_ran_through_pipes_and_streamed_its_progress(lake) -> None:
    _, result, instance = lake
    messages = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert any("external process successfully opened dagster pipes" in m for m in messages)
    # One line per PPO update, 16 envs x 32 steps each; the first rollout only warms the critic up.
    progress = [m.split()[:2] for m in messages if m.startswith("update=")]
    rollout = 16 * 32
    expected = [[f"update={u}", f"steps={rollout * (u + 1)}"] for u in range(1, STEPS // rollout)]
    assert progress == expected
    meta = materialized_metadata(result, "clstm_ppo_policy")
    assert meta["num_timesteps"] == STEPS and meta["num_updates"] == len(expected)
    assert meta["hparams"]["ent_coef_start"] == 0.03  # the small_budget preset, picked by budget on CPU
    assert meta["training_curve"].startswith("![training curve](data:image/svg+xml;base64,")
    assert meta["selected_checkpoint"] == "best_composite (validation)"
    run = TrainingRun.load(Path(meta["artifact"]).parent)
    assert isinstance(run.data, DatasetData) and run.selection_envs == 16  # checkpoints chosen on selection days


def test_a_learning_rate_set_in_the_launchpad_reaches_the_optimizer(lake) -> None:
    env, result, _ = lake
    meta = materialized_metadata(result, "clstm_ppo_policy")
    # What the optimizer ran with (its param group's lr, reported by the trainer process), and what was saved.
    assert meta["last/charts/actor_learning_rate"] == pytest.approx(LAUNCHPAD_LR, rel=1e-12)
    run = TrainingRun.load(Path(meta["artifact"]).parent)
    assert run.agent.actor_lr == LAUNCHPAD_LR and run.preset == "small_budget"
    assert run.agent.critic_lr == PRESETS["small_budget"]["critic_lr"]  # the rest is the preset's
    assert run.config_hash() == meta["config_hash"]
    # The launchpad shows the field, with what it does and the presets' values.
    schema = CLSTMPolicyConfig.to_config_schema().as_field().config_type
    actor_lr = schema.fields["agent"].config_type.fields["actor_lr"]
    shown = f"small_budget {PRESETS['small_budget']['actor_lr']:g}"
    assert "Adam learning rate of the actor" in actor_lr.description and shown in actor_lr.description


@pytest.mark.parametrize("bad", [{"agent": {"actor_lrr": 1e-4}}, {"agent": {"actor_lr": "fast"}},
                                 {"env": {"windw": 4}}, {"total_timestep": 10}])
def test_a_wrong_key_or_type_is_refused_before_the_run_starts(lake, bad) -> None:
    _, _, instance = lake
    clstm = [a for a in assets_in_groups("training") if a.key.path[-1] in TRAINING]
    with pytest.raises(dg.DagsterInvalidConfigError):
        dg.materialize(clstm, partition_key=DAY, instance=instance, selection=["clstm_ppo_policy"],
                       resources={"warehouse": WarehouseResource(), "compute": ComputeResource(),
                                  "pipes_subprocess_client": dg.PipesSubprocessClient()},
                       run_config={"ops": {"clstm_ppo_policy": {"config": bad}}})


def test_a_value_out_of_range_is_refused_before_the_trainer_starts(lake) -> None:
    _, _, instance = lake
    clstm = [a for a in assets_in_groups("training") if a.key.path[-1] in TRAINING]
    result = dg.materialize(clstm, partition_key=DAY, instance=instance, selection=["clstm_ppo_policy"],
                            resources={"warehouse": WarehouseResource(), "compute": ComputeResource(),
                                       "pipes_subprocess_client": dg.PipesSubprocessClient()},
                            run_config={"ops": {"clstm_ppo_policy": {"config": {"agent": {"hidden": 0}}}}},
                            raise_on_error=False)
    assert not result.success
    (failure,) = result.get_step_failure_events()
    assert "['hidden'] out of range" in failure.step_failure_data.error.to_string()
    messages = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert not any(m.startswith("training:") or "opened dagster pipes" in m for m in messages)


def test_reported_selection_metrics_are_the_saved_models(lake) -> None:
    env, result, _ = lake
    meta = materialized_metadata(result, "clstm_ppo_policy")
    dataset = Path(env["PIPELINE_DATA_LAKE"]) / "artifacts" / "datasets" / DAY
    selection = intraday_env(dataset, part="selection", num_envs=16, window=8, loss_cut=None, profit_lock=None)
    again = evaluate_policy(CLSTMPPO.load(meta["artifact"]), selection)
    assert again["episodes"] == 10  # 5 selection days x 2 symbols, each once
    for key, value in again.items():
        assert meta[f"validation/{key}"] == pytest.approx(value), key


def test_model_is_registered_as_a_candidate_with_its_lineage(lake) -> None:
    env, result, _ = lake
    meta = materialized_metadata(result, "clstm_ppo_policy")
    dataset_meta = materialized_metadata(result, "training_dataset")
    (row,) = read_registry(Warehouse(Path(env["PIPELINE_DATA_LAKE"]) / "warehouse.duckdb")).to_dicts()
    assert row["model_id"] == meta["model_id"] and row["status"] == "candidate"
    assert (row["algo"], row["member"], row["trading_day"]) == ("clstm_ppo", "seed0", date.fromisoformat(DAY))
    assert row["sha256"] == file_sha256(row["artifact_path"]) == meta["sha256"]
    assert row["data_version"] == dataset_meta["data_version"]
    assert (row["window_start"].isoformat(), row["window_end"].isoformat()) == (WINDOW[0], DAY)
    assert row["code_version"] and row["config_hash"] == meta["config_hash"]
    assert json.loads(row["metrics"])["selection"]["episodes"] == 10


def test_readme_cli_command_trains_and_a_rerun_keeps_its_models(lake) -> None:
    env, _, _ = lake
    run_config = {"execution": {"config": {"in_process": {}}},
                  "resources": {"compute": {"config": {"total_timesteps": 2048, "torch_threads": 1}}},
                  "ops": {"clstm_ppo_policy": {"config": {"num_envs": 16, "seed": 1}},
                          "sb3_baselines": {"config": {"seed": 1, "ppo_timesteps": 1024, "sac_timesteps": 200}}}}
    command = [str(Path(sys.executable).with_name("dagster")), "asset", "materialize", "-m", "pipeline.definitions",
               "--select", "group:training", "--partition", DAY, "--config-json", json.dumps(run_config)]
    store = Warehouse(Path(env["PIPELINE_DATA_LAKE"]) / "warehouse.duckdb")
    registered = []
    for _ in range(2):
        done = subprocess.run(command, cwd=REPO_ROOT, env={**os.environ, **env}, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-4000:]
        rows = read_registry(store)
        # The whole group: CLSTM-PPO seed1 beside the fixture's seed0, both SB3 baselines and their ensemble; the
        # second run (same seeds, config and data) keeps its models and rows instead of training over them.
        assert sorted(zip(rows["algo"], rows["member"], strict=True)) == [
            ("clstm_ppo", "seed0"), ("clstm_ppo", "seed1"), ("ensemble", "k3"), ("sb3_ppo", "seed1"),
            ("sb3_sac", "seed1")]
        registered.append(rows.select("model_id", "artifact_path", "sha256", "registered_at").sort("model_id"))
    assert registered[0].equals(registered[1])


def test_compute_with_two_processes_trains_under_torchrun(lake) -> None:
    """`nproc_per_node: 2` launches the trainer with torchrun (2 CPU ranks, gloo) through the same Pipes client:
    rank 0 alone reports, the steps count both ranks, and the model is registered like a one-process one."""
    env, _, _ = lake
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        instance = dg.DagsterInstance.ephemeral()
        resources = {"warehouse": WarehouseResource(), "pipes_subprocess_client": dg.PipesSubprocessClient(),
                     "compute": ComputeResource(total_timesteps=STEPS, torch_threads=1, nproc_per_node=2)}
        run_config = {"ops": {"clstm_ppo_policy": {"config": {"num_envs": 16, "seed": 2}}}}
        clstm = [a for a in assets_in_groups("training") if a.key.path[-1] == "clstm_ppo_policy"]
        result = dg.materialize(clstm, resources=resources, partition_key=DAY, instance=instance,
                                run_config=run_config)
    assert result.success
    messages = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert any("torch.distributed.run" in m and "--nproc-per-node=2" in m for m in messages)
    meta = materialized_metadata(result, "clstm_ppo_policy")
    assert meta["world_size"] == 2 and meta["num_timesteps"] == STEPS
    # 2 ranks x 16 envs x 32 steps per update; one progress line per update, from rank 0 only.
    progress = [m for m in messages if m.startswith("update=")]
    assert len(progress) == meta["num_updates"] == STEPS // (2 * 16 * 32) - 1
    rows = read_registry(Warehouse(Path(env["PIPELINE_DATA_LAKE"]) / "warehouse.duckdb")).to_dicts()
    (row,) = [r for r in rows if (r["algo"], r["member"]) == ("clstm_ppo", "seed2")]
    assert row["model_id"] == meta["model_id"] and row["sha256"] == file_sha256(row["artifact_path"])
