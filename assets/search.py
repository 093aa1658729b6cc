"""On-demand hyperparameter search (group `training`, not in the daily job): an Optuna study over the CLSTM-PPO
hyperparameters on the `training_dataset` of trading day D, scored by the selection Sharpe after costs.

The study lives in an Optuna RDB storage (`<lake>/optuna/studies.db` unless a URL is given), named per day, so a
re-run adds trials to it and `optuna-dashboard` can watch it while it runs. The best parameters are written to
`artifacts/search/<D>/best_params.json`, which `clstm_ppo_policy` takes through its `hparams_path` config.
"""

import json
import time
from pathlib import Path

import dagster as dg
import optuna
from pydantic import Field

from assets.training import DATASET_KEY, DEFAULT_INTRADAY, TRAINING_GROUP, artifacts_dir, dataset_dir, one_day
from pipeline.training.search import (
    SearchSpec,
    best_params,
    importance_markdown,
    run_study,
    shown_url,
    space_markdown,
    trials_markdown,
)
from resources.compute import ComputeResource
from resources.warehouse import WarehouseResource

SEARCH_KEY = dg.AssetKey("hyperparameter_search")


class HyperparameterSearchConfig(dg.Config):
    n_trials: int = Field(default=20, description="Trials this run adds to the study (over all workers).")
    steps_per_trial: int = Field(default=65_536, description="Env steps each trial trains for (pruned: fewer).")
    workers: int = Field(default=1, description="Processes running trials of the study at once.")
    study_name: str | None = Field(default=None, description="Optuna study; unset: clstm_ppo-<D>.")
    storage: str | None = Field(
        default=None, description="Optuna storage URL (sqlite:///... or postgresql://...); unset: "
        "sqlite:///<lake>/optuna/studies.db.")
    seed: int = Field(default=0, description="Training seed of every trial and base seed of the sampler.")
    preset: str = Field(default="small_budget", description="PPOConfig preset under the searched fields.")
    num_envs: int = Field(default=16, description="Parallel training episodes per trial.")
    report_every: int = Field(default=5, description="PPO updates between selection Sharpes sent to the pruner.")
    pruner_startup_trials: int = Field(default=3, description="Finished trials before the median pruner prunes.")
    env_json: str = Field(
        default=json.dumps(DEFAULT_INTRADAY), description="IntradayConfig fields under the searched ones, as JSON."
    )


def search_dir(warehouse: WarehouseResource, day_iso: str) -> Path:
    return artifacts_dir(warehouse) / "search" / day_iso


def default_storage(warehouse: WarehouseResource) -> str:
    return f"sqlite:///{warehouse.lake().resolve() / 'optuna' / 'studies.db'}"


def build_search_assets(partitions_def: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    @dg.asset(
        key=SEARCH_KEY,
        deps=[DATASET_KEY],
        group_name=TRAINING_GROUP,
        kinds={"optuna", "pytorch"},
        partitions_def=partitions_def,
        description="On demand: an Optuna study of CLSTM-PPO hyperparameters on the dataset of D, scored by the "
        "selection Sharpe after costs (median pruning); a re-run adds trials. Best parameters in "
        "artifacts/search/<D>/best_params.json for clstm_ppo_policy's hparams_path.",
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
            storage=config.storage or default_storage(warehouse),
            steps_per_trial=config.steps_per_trial, preset=config.preset, env=json.loads(config.env_json),
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
            "trials_table": dg.MetadataValue.md(trials_markdown(study)),
            "parameter_importance": dg.MetadataValue.md(importance_markdown(study)),
            "search_space": dg.MetadataValue.md(space_markdown()),
            "dashboard": f"optuna-dashboard {shown_url(spec.storage)}",
        })

    return [hyperparameter_search]
