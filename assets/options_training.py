"""The options agent's training assets, partitioned by trading day D, reading data up to D only.

The options agent is its own product, so its assets have a group of their own (`options`): the daily job's groups
(training, evaluation, deployment) and `--select group:training` keep meaning the intraday product, whose lake
need not hold option chains of the window.

- `options_dataset`: one underlying's option chains (`raw.option_snapshots` + `features.options`, through
  `load_option_chain`) over the window ending at D, split train | embargo | selection | gate; saved to
  `artifacts/options_datasets/<D>/`.
- `options_policy`: CLSTM-PPO on the train part's chains, through Dagster Pipes running the same trainer process
  as `clstm_ppo_policy` (`python -m pipeline.training.trainer training_run.json`, an `OptionsData` run); the
  checkpoint is chosen on the selection days; registered in `models.registry` as algo `clstm_ppo_options`. 31
  actions by default (flat and single long options), 91 with `action_set: 91` (verticals, straddles, ...).
"""

import json
from datetime import date
from pathlib import Path

import dagster as dg
from pydantic import Field

from assets.features import OPTIONS_KEY
from assets.ingest import raw_asset_key
from assets.run_config import mirror, set_fields
from assets.training import CLSTMHyperparameters, artifacts_dir, kept_model, one_day
from pipeline.envs.options import OptionsTradingConfig
from pipeline.envs.warehouse_loader import OptionLoaderConfig
from pipeline.model_store import fresh_model_dir
from pipeline.registry import ModelRecord, code_version, file_sha256, model_id_for, register_model
from pipeline.training.dataset import DatasetConfig
from pipeline.training.options_dataset import (
    OptionsDatasetConfig,
    build_options_dataset,
    load_options_manifest,
)
from pipeline.training.run import NUM_ENVS, RUN_FILE, SELECTION_ENVS, OptionsData, TrainingRun
from resources.compute import ComputeResource
from resources.warehouse import WarehouseResource

OPTIONS_DATASET_KEY = dg.AssetKey("options_dataset")
OPTIONS_POLICY_KEY = dg.AssetKey("options_policy")
OPTIONS_ALGO = "clstm_ppo_options"
OPTIONS_GROUP = "options"
_DATASET = OptionsDatasetConfig()

OptionsEnvSettings = mirror(OptionsTradingConfig, "OptionsEnvSettings", exclude=("evaluation",),
                            defaults=OptionsTradingConfig())
"""The options env's settings: action set (31 or 91), window, costs, reward scale."""


class OptionsDatasetAssetConfig(dg.Config):
    underlying: str = Field(default=_DATASET.underlying, description="The underlying whose chain is traded.")
    window_days: int = Field(default=_DATASET.window.window_days, description="Trading days ending at D: train "
                             "+ embargo + selection + gate.")
    embargo_days: int = Field(default=_DATASET.window.embargo_days, description="Days dropped after train.")
    selection_days: int = Field(default=_DATASET.window.selection_days, description="Days the checkpoint is "
                                "chosen on.")
    gate_days: int = Field(default=_DATASET.window.gate_days, description="The window's last days, read by the "
                           "promotion gate alone.")
    expiries: int = Field(default=_DATASET.loader.expiries, description="Expiries per day on the grid.")
    strikes: int = Field(default=_DATASET.loader.strikes, description="Strikes per expiry on the grid.")

    def dataset_config(self) -> OptionsDatasetConfig:
        window = DatasetConfig(window_days=self.window_days, embargo_days=self.embargo_days,
                               selection_days=self.selection_days, gate_days=self.gate_days)
        return OptionsDatasetConfig(self.underlying, window,
                                    OptionLoaderConfig(expiries=self.expiries, strikes=self.strikes))


class OptionsPolicyConfig(dg.Config):
    """The launchpad's view of an options `TrainingRun`."""

    seed: int = Field(default=0, description="Seed of the run.")
    total_timesteps: int | None = Field(default=None, description="Env steps; unset: the compute resource's.")
    preset: str | None = Field(default=None, description="CLSTM-PPO preset; unset: the one for the budget.")
    num_envs: int = Field(default=NUM_ENVS, description="Parallel training episodes per process.")
    selection_envs: int = Field(default=SELECTION_ENVS, description="Parallel envs of the selection walk.")
    agent: CLSTMHyperparameters = Field(default_factory=CLSTMHyperparameters,  # type: ignore[valid-type]
                                        description="CLSTM-PPO hyperparameters over the preset's.")
    env: OptionsEnvSettings = Field(default_factory=OptionsEnvSettings,  # type: ignore[valid-type]
                                    description="The options env's settings (action_set 31 or 91, costs, ...).")

    def training_run(self, compute: ComputeResource, data_dir: Path) -> TrainingRun:
        overrides = set_fields(self.agent)
        if compute.torch_threads is not None:
            overrides.setdefault("torch_threads", compute.torch_threads)
        return TrainingRun.build(OptionsData(str(data_dir)), total_timesteps=self.total_timesteps or
                                 compute.total_timesteps, seed=self.seed, device=compute.resolved_device(),
                                 preset=self.preset, agent=overrides, num_envs=self.num_envs,
                                 selection_envs=self.selection_envs,
                                 options_env=OptionsTradingConfig(**self.env.model_dump()))


def options_dataset_dir(warehouse: WarehouseResource, day: date) -> Path:
    return artifacts_dir(warehouse) / "options_datasets" / day.isoformat()


def _window_dep(key: dg.AssetKey) -> dg.AssetDep:
    mapping = dg.TimeWindowPartitionMapping(start_offset=-(_DATASET.window.window_days - 1),
                                            allow_nonexistent_upstream_partitions=True)
    return dg.AssetDep(key, partition_mapping=mapping)


def build_options_training_assets(partitions_def: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    @dg.asset(key=OPTIONS_DATASET_KEY, deps=[_window_dep(raw_asset_key("option_snapshots")), _window_dep(OPTIONS_KEY)],
              group_name=OPTIONS_GROUP, kinds={"duckdb", "safetensors"}, partitions_def=partitions_def,
              description="One underlying's option chains over the N trading days ending at D, split train | "
              "embargo | selection | gate; safetensors + manifest under artifacts/options_datasets/<D>/.")
    def options_dataset(context: dg.AssetExecutionContext, config: OptionsDatasetAssetConfig,
                        warehouse: WarehouseResource) -> dg.MaterializeResult:
        day = one_day(context)
        path = options_dataset_dir(warehouse, day)
        manifest = build_options_dataset(warehouse.warehouse(), day, config.dataset_config(), path)
        return dg.MaterializeResult(
            metadata={"path": dg.MetadataValue.path(str(path)), "underlying": manifest["underlying"],
                      **{f"{p}_days": dg.MetadataValue.json(manifest[f"{p}_days"]) for p in ("train", "selection",
                                                                                             "gate")},
                      "short_sessions": dg.MetadataValue.json(manifest["short_sessions"]),
                      "data_version": manifest["data_version"]},
            data_version=dg.DataVersion(manifest["data_version"]))

    @dg.asset(key=OPTIONS_POLICY_KEY, deps=[OPTIONS_DATASET_KEY], group_name=OPTIONS_GROUP, kinds={"pytorch"},
              partitions_def=partitions_def,
              description="CLSTM-PPO on the options dataset of D (31 actions, 91 by config) through Dagster Pipes; "
              "the checkpoint best on the selection days is registered as a clstm_ppo_options candidate.")
    def options_policy(context: dg.AssetExecutionContext, config: OptionsPolicyConfig, warehouse: WarehouseResource,
                       compute: ComputeResource,
                       pipes_subprocess_client: dg.PipesSubprocessClient) -> dg.MaterializeResult:
        day = one_day(context)
        data_dir = options_dataset_dir(warehouse, day)
        manifest = load_options_manifest(data_dir)
        run = config.training_run(compute, data_dir)
        model_id = model_id_for(OPTIONS_ALGO, f"seed{config.seed}", day, run.config_hash(), manifest["data_version"])
        if (kept := kept_model(context, warehouse, model_id)) is not None:
            return dg.MaterializeResult(metadata=kept)
        model_dir = fresh_model_dir(artifacts_dir(warehouse), model_id)
        run = run.with_output(model_dir)
        run_path = run.save(model_dir / RUN_FILE)
        reported = compute.pipes_client(pipes_subprocess_client).run(
            context=context, **compute.pipes_run_args(str(run_path))).get_materialize_result()
        record = ModelRecord(
            trading_day=day, algo=OPTIONS_ALGO, member=f"seed{config.seed}", artifact_path=str(run.output),
            sha256=file_sha256(run.output), config_hash=run.config_hash(), code_version=code_version(),
            data_version=manifest["data_version"], window_start=date.fromisoformat(manifest["window"][0]),
            window_end=date.fromisoformat(manifest["window"][-1]),
            metrics={"underlying": manifest["underlying"], "action_set": run.options_env.action_set,
                     "selection": json.loads(run.output.with_suffix(".json").read_text()).get("validation", {})},
        )
        model_id = register_model(warehouse.warehouse(), record)
        context.log.info(f"registered {model_id} (candidate, {run.options_env.action_set} actions)")
        return dg.MaterializeResult(metadata={
            **reported.metadata, "model_id": model_id, "artifact": dg.MetadataValue.path(record.artifact_path),
            "config_hash": record.config_hash, "data_version": record.data_version,
            "training_run": dg.MetadataValue.path(str(run_path)), "action_set": run.options_env.action_set})

    return [options_dataset, options_policy]
