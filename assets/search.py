"""On-demand hyperparameter search (group `search` of its own, so a group run of `training` trains today's models
and nothing else; not in the daily job): an Optuna study over the CLSTM-PPO
hyperparameters on the `training_dataset` of trading day D, scored by the selection Sharpe after costs.

The study lives in an Optuna RDB storage (`<lake>/optuna/studies.db` unless a URL is given: in the run config
without a password, or in PIPELINE_OPTUNA_STORAGE), named per day, so a re-run adds trials to it and
`optuna-dashboard` can watch it while it runs. The best trial's `TrainingRun` is written to
`artifacts/search/<D>/best_run.json` (with a summary in `best_params.json`), which `clstm_ppo_policy` takes
through its `searched_run` config.
"""

import json
import time
from pathlib import Path

import dagster as dg
import optuna
from pydantic import Field

from assets.training import DATASET_KEY, IntradayEnvSettings, artifacts_dir, dataset_dir, one_day
from pipeline.envs.intraday import IntradayConfig
from pipeline.training.search import (
    SearchSpec,
    best_params,
    best_run,
    importance_markdown,
    run_study,
    shown_url,
    space_markdown,
    study_storage,
    trials_markdown,
)
from resources.compute import ComputeResource
from resources.warehouse import WarehouseResource

SEARCH_KEY = dg.AssetKey("hyperparameter_search")
SEARCH_GROUP = "search"


class HyperparameterSearchConfig(dg.Config):
    n_trials: int = Field(default=20, description="Trials this run adds to the study (over all workers).")
    steps_per_trial: int = Field(default=65_536, description="Env steps each trial trains for (pruned: fewer).")
    workers: int = Field(default=1, description="Processes running trials of the study at once.")
    study_name: str | None = Field(default=None, description="Optuna study; unset: clstm_ppo-<D>.")
    storage: str | None = Field(
        default=None, description="Optuna storage URL without a password (sqlite:///... or postgresql://user@host/db)"
        "; unset: PIPELINE_OPTUNA_STORAGE (the place for a URL with a password), else "
        "sqlite:///<lake>/optuna/studies.db.")
    seed: int = Field(default=0, description="Training seed of every trial and base seed of the sampler.")
    preset: str | None = Field(default=None, description="PPOConfig preset under the searched fields; unset: the "
                               "one for steps_per_trial (small_budget).")
    num_envs: int = Field(default=SearchSpec.num_envs, description="Parallel training episodes per trial.")
    report_every: int = Field(default=5, description="PPO updates between selection Sharpes sent to the pruner.")
    pruner_startup_trials: int = Field(default=3, description="Finished trials before the median pruner prunes.")
    env: IntradayEnvSettings = Field(default_factory=IntradayEnvSettings,  # type: ignore[valid-type]
                                     description="The intraday env's settings under the searched ones.")


def search_dir(warehouse: WarehouseResource, day_iso: str) -> Path:
    return artifacts_dir(warehouse) / "search" / day_iso


def default_storage(warehouse: WarehouseResource) -> str:
    return f"sqlite:///{warehouse.lake().resolve() / 'optuna' / 'studies.db'}"


def build_search_assets(partitions_def: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    @dg.asset(
        key=SEARCH_KEY,
        deps=[DATASET_KEY],
        group_name=SEARCH_GROUP,
        kinds={"optuna", "pytorch"},
        partitions_def=partitions_def,
        description="On demand: an Optuna study of CLSTM-PPO hyperparameters on the dataset of D, scored by the "
        "selection Sharpe after costs (median pruning); a re-run adds trials. The best trial's run in "
        "artifacts/search/<D>/best_run.json for clstm_ppo_policy's searched_run.",
    )
    def hyperparameter_search(
        context: dg.AssetExecutionContext,
        config: HyperparameterSearchConfig,
        warehouse: WarehouseResource,
        compute: ComputeResource,
    ) -> dg.MaterializeResult:
        trading_day = one_day(context)
        day = trading_day.isoformat()
        spec = SearchSpec(
            dataset_dir=str(dataset_dir(warehouse, trading_day)),
            study_name=config.study_name or f"clstm_ppo-{day}",
            storage=study_storage(config.storage, default_storage(warehouse)),
            steps_per_trial=config.steps_per_trial, preset=config.preset, env=IntradayConfig(**config.env.model_dump()),
            num_envs=config.num_envs, report_every=config.report_every, seed=config.seed,
            device=compute.resolved_device(), pruner_startup_trials=config.pruner_startup_trials,
        )
        context.log.info(f"study {spec.study_name} on {shown_url(spec.storage)}: {config.n_trials} trials over "
                         f"{config.workers} worker(s), {spec.steps_per_trial} steps each")
        started = time.perf_counter()
        study = run_study(spec, config.n_trials, config.workers)
        minutes = (time.perf_counter() - started) / 60
        states = {s.name: sum(t.state == s for t in study.trials) for s in optuna.trial.TrialState}
        if states["COMPLETE"] == 0:
            raise dg.Failure(f"study {spec.study_name} has no completed trial yet ({states}); run it again with "
                             "more trials, or a lower pruner_startup_trials")
        best = best_params(study, spec)
        path = search_dir(warehouse, day) / "best_params.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(best, indent=2))
        run_path = best_run(study, spec).save(search_dir(warehouse, day) / "best_run.json")
        context.log.info(f"best: trial {best['trial']}, selection Sharpe {best['selection_sharpe']:.3f}")
        return dg.MaterializeResult(metadata={
            "study_name": spec.study_name,
            "storage": shown_url(spec.storage),
            "trials": len(study.trials),
            "trials_by_state": dg.MetadataValue.json({k: v for k, v in states.items() if v}),
            "trials_per_minute": config.n_trials / minutes,
            "best_selection_sharpe": best["selection_sharpe"],
            "best_trial": best["trial"],
            "best_params": dg.MetadataValue.json(best),
            "best_params_path": dg.MetadataValue.path(str(path)),
            "best_run_path": dg.MetadataValue.path(str(run_path)),
            "trials_table": dg.MetadataValue.md(trials_markdown(study)),
            "parameter_importance": dg.MetadataValue.md(importance_markdown(study)),
            "search_space": dg.MetadataValue.md(space_markdown()),
            "dashboard": f"optuna-dashboard {shown_url(spec.storage)}",
        })

    return [hyperparameter_search]
