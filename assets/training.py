"""Training assets (group `training`), partitioned by trading day D, each reading only data up to D.

- `training_dataset`: the N trading days ending at D from the warehouse, split by time into train, an embargo,
  selection and gate days, normalization fitted on train; saved to `artifacts/datasets/<D>/`.
- `clstm_ppo_policy`: the framework-free trainer in its own process through Dagster Pipes (`torchrun` when the
  compute resource asks for several processes); its checkpoint is chosen and its early stopping driven on the
  selection days (the trainer never loads the gate's); progress streams into the run's logs, the diagnostics, the
  selection metrics and a training curve become metadata, and the chosen model is registered in
  `models.registry` as a `candidate`.
"""

import json
from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from assets.features import BARS_1M_KEY, MARKET_KEY
from assets.metadata import partition_days
from pipeline.envs.warehouse_loader import MarketLoaderConfig
from pipeline.features.catalog import DEFAULT_FEATURES
from pipeline.registry import ModelRecord, code_version, config_hash, file_sha256, register_model
from pipeline.training.dataset import DatasetConfig, build_dataset, load_manifest, save_dataset
from resources.compute import ComputeResource
from resources.warehouse import WarehouseResource

TRAINING_GROUP = "training"
DATASET_KEY = dg.AssetKey("training_dataset")
CLSTM_KEY = dg.AssetKey("clstm_ppo_policy")
DEFAULT_DATASET = DatasetConfig()
DEFAULT_WINDOW_DAYS = DEFAULT_DATASET.window_days
ENV_FACTORIES = "pipeline.training.env_factories"
# Whole-day episodes (no loss-cut/profit-lock) over 8-bar windows: the intraday settings the small_budget preset
# was measured to learn with (tests/trading_controls.py).
DEFAULT_INTRADAY = {"window": 8, "loss_cut": None, "profit_lock": None}


class TrainingDatasetConfig(dg.Config):
    window_days: int = Field(default=DEFAULT_WINDOW_DAYS, description="Trading days ending at D in the dataset: "
                             "train + embargo + selection + gate.")
    embargo_days: int = Field(default=DEFAULT_DATASET.embargo_days,
                              description="Days dropped between the train and selection parts.")
    selection_days: int = Field(default=DEFAULT_DATASET.selection_days, description="Days after the embargo on "
                                "which checkpoints, seeds and ensemble weights are chosen.")
    gate_days: int = Field(default=DEFAULT_DATASET.gate_days, description="The window's last days, read by the "
                           "promotion gate alone (at least 10 for its interval, 15 for a share of the oracle).")
    symbols: list[str] | None = Field(default=None, description="Symbols; unset: every symbol of the window.")
    features: list[str] = Field(default=list(DEFAULT_FEATURES), description="features.market columns observed.")
    turbulence: str = Field(
        default="turbulence_index", description="Risk-off column: turbulence_index, or turbulence_index_daily."
    )

    def dataset_config(self) -> DatasetConfig:
        loader = MarketLoaderConfig(features=tuple(self.features), turbulence=self.turbulence)
        symbols = tuple(self.symbols) if self.symbols else None
        return DatasetConfig(window_days=self.window_days, embargo_days=self.embargo_days,
                             selection_days=self.selection_days, gate_days=self.gate_days, symbols=symbols,
                             loader=loader)


class CLSTMPolicyConfig(dg.Config):
    total_timesteps: int | None = Field(default=None, description="Env steps; unset: the compute resource's.")
    preset: str | None = Field(default=None, description="small_budget | gpu_long; unset: the compute resource's.")
    seed: int = Field(default=0, description="Seed of the run (the ensemble member).")
    num_envs: int = Field(default=64, description="Parallel training episodes.")
    hparams_json: str = Field(default="{}", description="PPOConfig fields on top of the preset, as JSON.")
    hparams_path: str | None = Field(
        default=None, description="A best_params.json of hyperparameter_search: its preset (unless `preset` is "
        "set), PPOConfig fields (under hparams_json) and env fields (over env_json) are used.")
    env_json: str = Field(
        default=json.dumps(DEFAULT_INTRADAY), description="IntradayConfig fields of the training env, as JSON."
    )


def artifacts_dir(warehouse: WarehouseResource) -> Path:
    return warehouse.lake() / "artifacts"


def dataset_dir(warehouse: WarehouseResource, day: date) -> Path:
    return artifacts_dir(warehouse) / "datasets" / day.isoformat()


def one_day(context: dg.AssetExecutionContext) -> date:
    days = partition_days(context)
    if len(days) != 1:
        raise ValueError(f"training runs one trading day per run (one model per day); got {len(days)} days")
    return days[0]


def _window_dep(key: dg.AssetKey) -> dg.AssetDep:
    """Day D reads the DEFAULT_WINDOW_DAYS partitions ending at D (lineage shows the default window)."""
    mapping = dg.TimeWindowPartitionMapping(
        start_offset=-(DEFAULT_WINDOW_DAYS - 1), allow_nonexistent_upstream_partitions=True
    )
    return dg.AssetDep(key, partition_mapping=mapping)


def _dataset_metadata(manifest: dict[str, Any], path: Path) -> dict[str, Any]:
    return {
        "path": dg.MetadataValue.path(str(path)),
        "data_version": manifest["data_version"],
        **{f"{part}_days": dg.MetadataValue.json(manifest[f"{part}_days"])
           for part in ("train", "embargo", "selection", "gate")},
        "symbols": dg.MetadataValue.json(manifest["symbols"]),
        "feature_names": dg.MetadataValue.json(manifest["feature_names"]),
        "manifest": dg.MetadataValue.json(manifest),
    }


def build_training_assets(partitions_def: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    @dg.asset(
        key=DATASET_KEY,
        deps=[_window_dep(MARKET_KEY), _window_dep(BARS_1M_KEY)],
        group_name=TRAINING_GROUP,
        kinds={"duckdb", "safetensors"},
        partitions_def=partitions_def,
        description="N trading days ending at D, split into train, embargo, selection and gate days, "
        "normalization fitted on train; safetensors + manifest under artifacts/datasets/<D>/.",
    )
    def training_dataset(
        context: dg.AssetExecutionContext, config: TrainingDatasetConfig, warehouse: WarehouseResource
    ) -> dg.MaterializeResult:
        day = one_day(context)
        dataset = build_dataset(warehouse.warehouse(), day, config.dataset_config())
        path = save_dataset(dataset, dataset_dir(warehouse, day))
        manifest = dataset.manifest
        context.log.info(f"dataset of {day}: {len(manifest['train_days'])} train, "
                         f"{len(manifest['selection_days'])} selection and {len(manifest['gate_days'])} gate days, "
                         f"data version {manifest['data_version'][:12]}")
        return dg.MaterializeResult(metadata=_dataset_metadata(manifest, path),
                                    data_version=dg.DataVersion(manifest["data_version"]))

    @dg.asset(
        key=CLSTM_KEY,
        deps=[DATASET_KEY],
        group_name=TRAINING_GROUP,
        kinds={"pytorch"},
        partitions_def=partitions_def,
        description="CLSTM-PPO trained on the dataset of D through Dagster Pipes; the checkpoint with the best "
        "score on the selection days is registered in models.registry as a candidate.",
    )
    def clstm_ppo_policy(
        context: dg.AssetExecutionContext,
        config: CLSTMPolicyConfig,
        warehouse: WarehouseResource,
        compute: ComputeResource,
        pipes_subprocess_client: dg.PipesSubprocessClient,
    ) -> dg.MaterializeResult:
        day = one_day(context)
        data_dir = dataset_dir(warehouse, day)
        manifest = load_manifest(data_dir)
        run = _clstm_run_config(config, compute, data_dir)
        model_dir = artifacts_dir(warehouse) / "models" / day.isoformat() / f"clstm_ppo-seed{config.seed}"
        model_dir.mkdir(parents=True, exist_ok=True)
        trainer_config = _with_paths(run, model_dir)
        config_path = model_dir / "train_config.json"
        config_path.write_text(json.dumps(trainer_config, indent=2))
        command = compute.trainer_command(str(config_path))
        context.log.info(f"training: {' '.join(command)} ({run['preset']}, {run['total_timesteps']} steps)")
        # The compute resource's launcher picks the client: this machine, or a GPU pod (same command either way).
        invocation = compute.pipes_client(pipes_subprocess_client).run(
            context=context, **compute.pipes_run_args(str(config_path)))
        reported = invocation.get_materialize_result()
        summary = json.loads((model_dir / "model.json").read_text())
        record = ModelRecord(
            trading_day=day, algo="clstm_ppo", member=f"seed{config.seed}",
            artifact_path=str(model_dir / "model.safetensors"),
            sha256=file_sha256(model_dir / "model.safetensors"), config_hash=config_hash(run),
            code_version=code_version(), data_version=manifest["data_version"],
            window_start=date.fromisoformat(manifest["window"][0]),
            window_end=date.fromisoformat(manifest["window"][-1]),
            metrics={"selection": summary.get("validation", {}), "best": summary.get("best", {}),
                     "last": {k: v for k, v in summary.get("last", {}).items() if isinstance(v, int | float)}},
        )
        model_id = register_model(warehouse.warehouse(), record)
        context.log.info(f"registered {model_id} (candidate)")
        return dg.MaterializeResult(metadata={
            **reported.metadata,
            "model_id": model_id,
            "artifact": dg.MetadataValue.path(record.artifact_path),
            "sha256": record.sha256,
            "config_hash": record.config_hash,
            "data_version": record.data_version,
            "code_version": record.code_version,
        })

    return [training_dataset, clstm_ppo_policy]


def _clstm_run_config(config: CLSTMPolicyConfig, compute: ComputeResource, data_dir: Path) -> dict[str, Any]:
    """The trainer config without paths (what the config hash covers): envs, budget, preset, hyperparameters."""
    device = compute.resolved_device()
    total = config.total_timesteps or compute.total_timesteps
    searched = json.loads(Path(config.hparams_path).read_text()) if config.hparams_path else {}
    preset = config.preset or searched.get("preset") or compute.resolved_preset()
    env_kwargs = json.loads(config.env_json) | searched.get("env", {})
    env = {"dataset_dir": str(data_dir), "device": device, **env_kwargs}
    hparams = {"seed": config.seed, "device": device, **searched.get("hparams", {}), **json.loads(config.hparams_json)}
    if compute.torch_threads is not None:
        hparams.setdefault("torch_threads", compute.torch_threads)
    return {
        "env": {"factory": f"{ENV_FACTORIES}:intraday_env",
                "kwargs": env | {"part": "train", "num_envs": config.num_envs}},
        "validation_env": {"factory": f"{ENV_FACTORIES}:intraday_env",
                           "kwargs": env | {"part": "selection", "num_envs": 16}},
        "total_timesteps": total,
        "preset": preset,
        "hparams": hparams,
    }


def _with_paths(run: dict[str, Any], model_dir: Path) -> dict[str, Any]:
    """The trainer config with where the model, its checkpoints and its TensorBoard run go."""
    paths = {"checkpoint_dir": str(model_dir / "checkpoints"), "tensorboard_dir": str(model_dir / "tensorboard")}
    return run | {"hparams": run["hparams"] | paths, "output": str(model_dir / "model.safetensors")}
