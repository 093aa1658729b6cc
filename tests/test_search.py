"""The hyperparameter search: Optuna studies over CLSTM-PPO on a tiny lake (6 sessions, a 5-day dataset window),
run through the framework-free core and through the Dagster asset, with tiny step budgets.

What is checked: pruning stops a trial and the study records it; a trial's value is the selection Sharpe of
the policy it trained (reporting to the pruner does not change training); a re-run adds trials to the same study;
two worker processes share one study without losing a trial; the best parameters reach the training asset.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import dagster as dg
import optuna
import pytest
from conftest import assets_in_groups, ingest_history, materialized_metadata, pipeline_env

from pipeline.agents.clstm_ppo import CLSTMPPO
from pipeline.agents.ppo_config import PPOConfig
from pipeline.contract.calendar import trading_days
from pipeline.envs.intraday import IntradayConfig
from pipeline.training.dataset import load_dataset
from pipeline.training.env_factories import intraday_env
from pipeline.training.run import TrainingRun
from pipeline.training.search import (
    ENV_PARAMS,
    SEARCH_SPACE,
    SearchSpec,
    importance_markdown,
    run_study,
    selection_metrics,
    selection_score,
    trials_markdown,
)
from resources.compute import ComputeResource
from resources.warehouse import WarehouseResource

DAY = "2024-07-09"
HISTORY = trading_days("2024-07-01", DAY)  # 6 sessions (July 4th is a holiday)
DATASET = {"window_days": 5, "embargo_days": 0, "selection_days": 2, "gate_days": 1}
ENV = {"window": 8, "loss_cut": None, "profit_lock": None}
# 8 envs x 32 steps (small_budget) = 256 steps a rollout: one critic warm-up rollout, then 2 PPO updates.
STEPS = 768
NUM_ENVS = 8
SEARCH = {"steps_per_trial": STEPS, "num_envs": NUM_ENVS, "report_every": 1}


def _assets(*names: str) -> list:
    return [a for a in assets_in_groups("training", "search") if a.key.path[-1] in names]


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory):
    env = pipeline_env(tmp_path_factory.mktemp("search"))
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        mp.setenv("PIPELINE_SYNTHETIC_SNAPSHOT_MINUTES", "390")
        ingest_history(HISTORY)
        instance = dg.DagsterInstance.ephemeral()
        resources = {"warehouse": WarehouseResource(), "pipes_subprocess_client": dg.PipesSubprocessClient(),
                     "compute": ComputeResource(total_timesteps=STEPS, torch_threads=1)}
        result = dg.materialize(_assets("training_dataset"), resources=resources, partition_key=DAY,
                                instance=instance, run_config={"ops": {"training_dataset": {"config": DATASET}}})
        assert result.success
        yield Path(env["PIPELINE_DATA_LAKE"]), instance, resources


def _spec(lake_dir: Path, name: str) -> SearchSpec:
    return SearchSpec(dataset_dir=str(lake_dir / "artifacts" / "datasets" / DAY), study_name=name,
                      storage=f"sqlite:///{lake_dir / 'optuna' / 'core.db'}", env=IntradayConfig(**ENV),
                      **SEARCH)


class PruneTrialOne(optuna.pruners.BasePruner):
    """Prunes trial 1 at its first report and nothing else: pruning made deterministic."""

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return trial.number == 1


def test_study_records_a_pruned_trial_and_scores_the_trained_policy(lake) -> None:
    lake_dir, _, _ = lake
    spec = _spec(lake_dir, "pruning")
    study = run_study(spec, 3, pruner=PruneTrialOne())
    states = [t.state for t in study.trials]
    assert states == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED,
                      optuna.trial.TrialState.COMPLETE]
    completed, pruned = study.trials[0], study.trials[1]
    # One selection Sharpe per PPO update (report_every=1); the pruned trial stopped at its first.
    assert sorted(completed.intermediate_values) == [1, 2]
    # Optuna keeps a pruned trial's last report as its value.
    assert list(pruned.intermediate_values) == [1] and pruned.value == pruned.intermediate_values[1]
    assert set(completed.params) == set(SEARCH_SPACE)
    # A policy that never trades has no Sharpe (no daily variation): it scores 0.
    assert completed.user_attrs["selection"].get("sharpe", 0.0) == completed.value

    # Trained again without a pruner watching, the same parameters give the same selection Sharpe: the value is
    # the trained policy's, and scoring it along the way left training alone.
    hparams = {k: v for k, v in completed.params.items() if k not in ENV_PARAMS}
    env = ENV | {k: v for k, v in completed.params.items() if k in ENV_PARAMS}
    agent = CLSTMPPO(intraday_env(spec.dataset_dir, part="train", num_envs=NUM_ENVS, **env),
                     PPOConfig.preset("small_budget", **hparams, seed=0, torch_threads=1))
    agent.learn(STEPS)
    selection = load_dataset(spec.dataset_dir).part("selection")
    assert selection_score(selection_metrics(agent, selection, IntradayConfig(**env))) == completed.value
    # The trial's TrainingRun is that run: small_budget for a trial's budget, the searched values on top.
    run = spec.trial_run(hparams, {k: v for k, v in env.items() if k in ENV_PARAMS})
    assert run.preset == "small_budget" and run.agent == agent.config.replace(num_envs=None)
    assert completed.intermediate_values[2] == completed.value  # the last report is the final policy's

    table = trials_markdown(study).splitlines()
    assert len(table) == 2 + 3 and "| 1 | PRUNED |" in table[3]


def test_two_worker_processes_share_one_study(lake) -> None:
    lake_dir, _, _ = lake
    spec = _spec(lake_dir, "workers")
    study = run_study(spec, 3, workers=2)
    assert [t.number for t in study.trials] == [0, 1, 2]
    assert all(t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for t in study.trials)
    assert sorted(t.user_attrs["worker"] for t in study.trials) == [0, 0, 1]  # 3 trials split 2 + 1
    # Each worker's sampler is seeded apart, so the two do not train the same points.
    assert len({json.dumps(t.params, sort_keys=True) for t in study.trials}) == 3


def test_importance_is_a_bar_chart_once_trials_differ() -> None:
    study = optuna.create_study(direction="maximize")
    assert importance_markdown(study).startswith("Parameter importance needs")
    distributions = {"actor_lr": optuna.distributions.FloatDistribution(1e-5, 1e-3, log=True),
                     "hidden": optuna.distributions.CategoricalDistribution([16, 32, 64, 128])}
    for i, (lr, hidden) in enumerate([(1e-5, 16), (1e-4, 32), (1e-3, 64), (3e-4, 128), (3e-5, 16)]):
        study.add_trial(optuna.trial.create_trial(params={"actor_lr": lr, "hidden": hidden},
                                                  distributions=distributions, value=math.log10(lr) + 0.01 * i))
    assert importance_markdown(study).startswith("![parameter importance](data:image/svg+xml;base64,")


def test_asset_reruns_continue_the_study_and_training_takes_the_best_params(lake) -> None:
    lake_dir, instance, resources = lake
    search = {"pruner_startup_trials": 1, "env": ENV, **SEARCH}
    metas = []
    for n_trials in (1, 1):
        result = dg.materialize(_assets("hyperparameter_search"), resources=resources, partition_key=DAY,
                                instance=instance, selection=["hyperparameter_search"],
                                run_config={"ops": {"hyperparameter_search": {"config": search | {
                                    "n_trials": n_trials}}}})
        metas.append(materialized_metadata(result, "hyperparameter_search"))
    assert [m["trials"] for m in metas] == [1, 2]
    assert metas[1]["study_name"] == f"clstm_ppo-{DAY}" and (lake_dir / "optuna" / "studies.db").exists()
    assert metas[1]["trials_table"].count("\n") == 2 + 2 - 1

    path = lake_dir / "artifacts" / "search" / DAY / "best_params.json"
    best = json.loads(path.read_text())
    assert best == metas[1]["best_params"] and metas[1]["best_params_path"] == str(path)
    assert set(best["hparams"]) | set(best["env"]) == set(SEARCH_SPACE)
    assert best["selection_sharpe"] == metas[1]["best_selection_sharpe"]

    searched = TrainingRun.load(metas[1]["best_run_path"])
    assert searched.agent.actor_lr == best["hparams"]["actor_lr"] and searched.env.window == best["env"]["window"]

    run_config = {"ops": {"clstm_ppo_policy": {"config": {
        "num_envs": NUM_ENVS, "searched_run": metas[1]["best_run_path"], "agent": {"clip_eps": 0.2}}}}}
    result = dg.materialize(_assets("training_dataset", "clstm_ppo_policy"), resources=resources,
                            partition_key=DAY, instance=instance, selection=["clstm_ppo_policy"],
                            run_config=run_config)
    trained = materialized_metadata(result, "clstm_ppo_policy")["hparams"]
    # The agent field set in the config is the explicit override, so it wins over the search; every other searched
    # field is the search's.
    assert trained["clip_eps"] == 0.2
    assert {k: trained[k] for k in best["hparams"] if k != "clip_eps"} == {
        k: v for k, v in best["hparams"].items() if k != "clip_eps"}
    model_id = materialized_metadata(result, "clstm_ppo_policy")["model_id"]
    run = TrainingRun.load(lake_dir / "artifacts" / "models" / model_id)
    assert {k: getattr(run.env, k) for k in ENV_PARAMS} == best["env"]


def test_daily_job_leaves_the_search_out() -> None:
    from pipeline.definitions import build_definitions

    job = build_definitions().resolve_job_def("daily_pipeline")
    keys = {key.to_user_string() for key in job.asset_layer.executable_asset_keys}
    assert "clstm_ppo_policy" in keys and "hyperparameter_search" not in keys
