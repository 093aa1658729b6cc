"""SB3 baselines and the ensemble of a trading day D (group `training`, partitioned like the other training assets).

- `sb3_baselines`: SB3 PPO on the intraday env and SAC on the portfolio env, both on D's dataset (train part) with
  the costs of the envs' defaults (the intraday env with CLSTM-PPO's settings), each scored on the walk of the
  selection days and registered in `models.registry` as a `candidate` (algo `sb3_ppo` / `sb3_sac`, member
  `seed<k>`).
- `ensemble_policy`: the intraday models registered for D on D's dataset (CLSTM-PPO and SB3 PPO, every seed),
  weighted by their scores on the selection days, saved as `ensemble.json`, scored on the same walk and registered
  (algo `ensemble`).
SB3 trains in this process: it is small and CPU-bound, so a subprocess would add start-up and nothing else. It
runs on the CPU whatever the compute resource's device, with the resource's `torch_threads`.
"""

import dataclasses
import json
from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from assets.run_config import mirror, set_fields
from assets.training import (
    CLSTM_KEY,
    DATASET_KEY,
    TRAINING_GROUP,
    IntradayEnvSettings,
    artifacts_dir,
    dataset_dir,
    kept_model,
    one_day,
)
from pipeline.agents.ensemble import WEIGHTINGS
from pipeline.agents.sb3 import PPOParams, SACParams
from pipeline.envs.portfolio import PortfolioConfig
from pipeline.model_store import fresh_model_dir
from pipeline.registry import (
    ModelRecord,
    code_version,
    config_hash,
    file_sha256,
    model_id_for,
    register_model,
)
from pipeline.training.dataset import MANIFEST_FILE
from pipeline.training.ensembles import (
    INTRADAY_ALGOS,
    build_ensemble,
    common_env_config,
    members_convergence,
    registered_members,
)
from pipeline.training.sb3 import BASELINES, torch_threads, train_dataset_baseline, validate
from resources.compute import ComputeResource
from resources.warehouse import WarehouseResource

BASELINES_KEY = dg.AssetKey("sb3_baselines")
ENSEMBLE_KEY = dg.AssetKey("ensemble_policy")


PortfolioEnvSettings = mirror(PortfolioConfig, "PortfolioEnvSettings", exclude=("evaluation",),
                              defaults=PortfolioConfig())
SB3PPOSettings = mirror(PPOParams, "SB3PPOSettings")
SB3SACSettings = mirror(SACParams, "SB3SACSettings")


class SB3BaselinesConfig(dg.Config):
    # Measured on a busy 2-core machine with compute.torch_threads=1: PPO 20,000 steps in 40 s, SAC 5,000 in 177 s
    # (a gradient step per env step), so the defaults together take about two minutes.
    ppo_timesteps: int = Field(default=20_000, description="SB3 PPO env steps on the intraday env (under a minute).")
    sac_timesteps: int = Field(default=2_000, description="SAC env steps on the portfolio env (about a minute).")
    seed: int = Field(default=0, description="Seed of both runs (the member seed<k> of the registry).")
    intraday_env: IntradayEnvSettings = Field(  # type: ignore[valid-type]
        default_factory=IntradayEnvSettings, description="The intraday env of SB3 PPO (CLSTM-PPO's by default).")
    portfolio_env: PortfolioEnvSettings = Field(  # type: ignore[valid-type]
        default_factory=PortfolioEnvSettings, description="The portfolio env of SAC.")
    ppo: SB3PPOSettings = Field(default_factory=SB3PPOSettings,  # type: ignore[valid-type]
                                description="SB3 PPO constructor arguments; unset: SB3's defaults.")
    sac: SB3SACSettings = Field(default_factory=SB3SACSettings,  # type: ignore[valid-type]
                                description="SB3 SAC constructor arguments; unset: SB3's defaults.")

    def runs(self) -> dict[str, dict[str, Any]]:
        """Per registry algo: the run's budget, seed, env settings and hyperparameters (what its config hash covers)."""
        return {
            "sb3_ppo": {"total_timesteps": self.ppo_timesteps, "seed": self.seed,
                        "env": self.intraday_env.model_dump(), "hparams": PPOParams(**set_fields(self.ppo)).hparams()},
            "sb3_sac": {"total_timesteps": self.sac_timesteps, "seed": self.seed,
                        "env": self.portfolio_env.model_dump(), "hparams": SACParams(**set_fields(self.sac)).hparams()},
        }


class EnsemblePolicyConfig(dg.Config):
    weighting: str = Field(default="softmax", description=f"Member weights from selection-day scores: {WEIGHTINGS}.")
    temperature: float = Field(default=1.0, description="Softmax temperature (high: equal weights).")
    score_metric: str = Field(
        default="sharpe", description="Selection-day metric that weights the members (sharpe, composite, ...)."
    )


def _record(day: date, algo: str, member: str, artifact: Path, manifest: dict[str, Any], run: dict[str, Any],
            metrics: dict[str, Any]) -> ModelRecord:
    return ModelRecord(
        trading_day=day, algo=algo, member=member, artifact_path=str(artifact), sha256=file_sha256(artifact),
        config_hash=config_hash(run), code_version=code_version(), data_version=manifest["data_version"],
        window_start=date.fromisoformat(manifest["window"][0]),
        window_end=date.fromisoformat(manifest["window"][-1]), metrics=metrics,
    )


def _partition_dataset(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource
) -> tuple[date, Path, dict[str, Any]]:
    """The run's trading day D, the folder of D's training dataset, and its manifest."""
    day = one_day(context)
    folder = dataset_dir(warehouse, day)
    return day, folder, json.loads((folder / MANIFEST_FILE).read_text())


def _selection_metadata(prefix: str, metrics: dict[str, float]) -> dict[str, float]:
    return {f"{prefix}selection/{k}": float(v) for k, v in metrics.items()}


def build_training_baseline_assets(partitions_def: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    def training_asset(key: dg.AssetKey, deps: list[dg.AssetKey]) -> Any:
        """A training asset of D (its description is the function's docstring)."""
        return dg.asset(key=key, deps=deps, group_name=TRAINING_GROUP, kinds={"pytorch"},
                        partitions_def=partitions_def)

    @training_asset(BASELINES_KEY, [DATASET_KEY])
    def sb3_baselines(
        context: dg.AssetExecutionContext, config: SB3BaselinesConfig, warehouse: WarehouseResource,
        compute: ComputeResource,
    ) -> dg.MaterializeResult:
        """SB3 PPO (intraday env) and SAC (portfolio env) on the dataset of D, scored on its selection days and
        registered in models.registry as candidates."""
        day, data_dir, manifest = _partition_dataset(context, warehouse)
        metadata: dict[str, Any] = {"data_version": manifest["data_version"]}
        for algo, run in config.runs().items():
            model_id = model_id_for(algo, f"seed{config.seed}", day, config_hash(run), manifest["data_version"])
            if (kept := kept_model(context, warehouse, model_id, prefix=f"{algo}/")) is not None:
                metadata |= kept
                continue
            model_dir = fresh_model_dir(artifacts_dir(warehouse), model_id)
            context.log.info(f"training {algo} ({BASELINES[algo].gym_id}, {run['total_timesteps']} steps)")
            policy, selection = train_dataset_baseline(algo, data_dir, model_dir, run["env"], run["total_timesteps"],
                                                        config.seed, run["hparams"], compute.torch_threads)
            metrics = {"selection": selection, "train": {"num_timesteps": policy.meta["num_timesteps"],
                                                           "mean_episode_return": policy.meta["mean_episode_return"]},
                       "last": policy.meta["last"]}
            record = _record(day, algo, f"seed{config.seed}", model_dir / "model.zip", manifest, run, metrics)
            model_id = register_model(warehouse.warehouse(), record)
            context.log.info(f"registered {model_id} (candidate): selection days {selection}")
            metadata |= {f"{algo}/model_id": model_id, f"{algo}/artifact": dg.MetadataValue.path(str(model_dir)),
                         f"{algo}/sha256": record.sha256, f"{algo}/num_timesteps": policy.meta["num_timesteps"],
                         **_selection_metadata(f"{algo}/", selection)}
        return dg.MaterializeResult(metadata=metadata)

    @training_asset(ENSEMBLE_KEY, [CLSTM_KEY, BASELINES_KEY])
    def ensemble_policy(
        context: dg.AssetExecutionContext, config: EnsemblePolicyConfig, warehouse: WarehouseResource,
        compute: ComputeResource,
    ) -> dg.MaterializeResult:
        """The intraday models registered for D (CLSTM-PPO and SB3 PPO, every seed) weighted by their scores on the
        selection days; ensemble.json under artifacts/models/<model_id>/, scored on the selection days and
        registered as a candidate."""
        day, data_dir, manifest = _partition_dataset(context, warehouse)
        members = registered_members(warehouse.warehouse(), day, manifest["data_version"], config.score_metric,
                                     INTRADAY_ALGOS)
        env_config = common_env_config(members)
        model_ids = [m.model_id for m in members]
        run = {"members": model_ids, "weighting": config.weighting, "temperature": config.temperature,
               "score_metric": config.score_metric, "env": dataclasses.asdict(env_config)}
        model_id = model_id_for("ensemble", f"k{len(members)}", day, config_hash(run), manifest["data_version"])
        if (kept := kept_model(context, warehouse, model_id)) is not None:
            return dg.MaterializeResult(metadata=kept)
        out_dir = fresh_model_dir(artifacts_dir(warehouse), model_id)
        # Loading a CLSTM-PPO member sets torch's threads to its training run's; this process keeps its own.
        with torch_threads(compute.torch_threads):
            ensemble = build_ensemble(members, out_dir, config.weighting, config.temperature)
            selection = validate(ensemble, "sb3_ppo", data_dir, env_config)
        weights = [float(w) for w in ensemble.weights]
        metrics = {"selection": selection, "members": model_ids, "weights": weights,
                   "scores": [m.score for m in members], "last": members_convergence(warehouse.warehouse(), members)}
        record = _record(day, "ensemble", f"k{len(members)}", out_dir / "ensemble.json", manifest, run, metrics)
        model_id = register_model(warehouse.warehouse(), record)
        context.log.info(f"registered {model_id} (candidate): {len(members)} members, weights {weights}")
        return dg.MaterializeResult(metadata={
            "model_id": model_id,
            "artifact": dg.MetadataValue.path(str(out_dir)),
            "sha256": record.sha256,
            "data_version": record.data_version,
            "members": dg.MetadataValue.json(model_ids),
            "weights": dg.MetadataValue.json(weights),
            "scores": dg.MetadataValue.json(metrics["scores"]),
            "members_table": dg.MetadataValue.md(_members_table(members, weights, config.score_metric)),
            **_selection_metadata("", selection),
        })

    return [sb3_baselines, ensemble_policy]


def _members_table(members: list[Any], weights: list[float], metric: str) -> str:
    rows = [f"| {m.model_id} | {m.algo} | {m.score:.4g} | {w:.4f} |" for m, w in zip(members, weights, strict=True)]
    return "\n".join([f"| member | algo | selection {metric} | weight |", "|---|---|---|---|", *rows])
