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
from assets.run_config import mirror, set_fields
from pipeline.agents.ppo_config import PRESETS, PPOConfig
from pipeline.envs.intraday import IntradayConfig
from pipeline.envs.warehouse_loader import MarketLoaderConfig
from pipeline.features.catalog import DEFAULT_FEATURES
from pipeline.features.quality import CONSTANT
from pipeline.model_store import fresh_model_dir, registered_artifact
from pipeline.registry import ModelRecord, code_version, file_sha256, model_id_for, register_model
from pipeline.training.dataset import DatasetConfig, build_dataset, load_manifest, save_dataset
from pipeline.training.run import (
    DEFAULT_INTRADAY,
    NUM_ENVS,
    RUN_FILE,
    SELECTION_ENVS,
    DatasetData,
    TrainingRun,
)
from resources.compute import ComputeResource
from resources.warehouse import WarehouseResource

TRAINING_GROUP = "training"
DATASET_KEY = dg.AssetKey("training_dataset")
CLSTM_KEY = dg.AssetKey("clstm_ppo_policy")
DEFAULT_DATASET = DatasetConfig()
DEFAULT_WINDOW_DAYS = DEFAULT_DATASET.window_days
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


_RUN_FIELDS = ("seed", "device", "num_envs", "checkpoint_dir", "tensorboard_dir", "torch_threads")
"""PPOConfig fields the run sets itself: the seed and envs are the run's, the device and threads the compute
resource's, the paths the model folder's."""
_PRESET_VALUES = {name: "Presets: " + "; ".join(f"{p} {values[name]}" for p, values in PRESETS.items())
                  for name in next(iter(PRESETS.values()))}

CLSTMHyperparameters = mirror(PPOConfig, "CLSTMHyperparameters", exclude=_RUN_FIELDS, notes=_PRESET_VALUES)
"""Every plain CLSTM-PPO hyperparameter, unset meaning the preset's value."""
IntradayEnvSettings = mirror(IntradayConfig, "IntradayEnvSettings", exclude=("evaluation",),
                             defaults=DEFAULT_INTRADAY)
"""The intraday env's settings, defaulting to what every intraday model is trained on."""


class CLSTMPolicyConfig(dg.Config):
    """The launchpad's view of a `TrainingRun`: the same fields, checked before launch."""

    seed: int = Field(default=0, description="Seed of the run (the ensemble member).")
    total_timesteps: int | None = Field(default=None, description="Env steps; unset: the compute resource's.")
    preset: str | None = Field(default=None, description=f"One of {sorted(PRESETS)}; unset: the one for the "
                               "budget and device (small_budget on CPU and below 10M steps).")
    num_envs: int = Field(default=NUM_ENVS, description="Parallel training episodes per process.")
    selection_envs: int = Field(default=SELECTION_ENVS,
                                description="Parallel envs of the selection walk that chooses the checkpoint.")
    agent: CLSTMHyperparameters = Field(default_factory=CLSTMHyperparameters,  # type: ignore[valid-type]
                                        description="CLSTM-PPO hyperparameters over the preset's.")
    env: IntradayEnvSettings = Field(default_factory=IntradayEnvSettings,  # type: ignore[valid-type]
                                     description="The intraday env's settings (costs, window, stops, rewards).")
    searched_run: str | None = Field(
        default=None, description="The best_run.json of a hyperparameter_search: its agent and env (the agent "
        "fields set here on top) replace the preset's and the env settings here.")

    def training_run(self, compute: ComputeResource, data_dir: Path) -> TrainingRun:
        """The run this config asks for on the dataset in `data_dir`, on the compute resource's device."""
        device = compute.resolved_device()
        total = self.total_timesteps or compute.total_timesteps
        overrides = set_fields(self.agent)
        if compute.torch_threads is not None:
            overrides.setdefault("torch_threads", compute.torch_threads)
        counts = {"num_envs": self.num_envs, "selection_envs": self.selection_envs}
        if self.searched_run is None:
            return TrainingRun.build(DatasetData(str(data_dir)), total_timesteps=total, seed=self.seed,
                                     device=device, preset=self.preset, agent=overrides,
                                     env=IntradayConfig(**self.env.model_dump()), **counts)
        if self.preset is not None:
            raise ValueError("preset and searched_run both choose the agent's values: set one of them")
        searched = TrainingRun.load(self.searched_run)
        agent = searched.agent.replace(**overrides, seed=self.seed, device=device)
        return TrainingRun(DatasetData(str(data_dir)), agent, total, searched.preset, searched.env, **counts)


def artifacts_dir(warehouse: WarehouseResource) -> Path:
    return warehouse.lake() / "artifacts"


def dataset_dir(warehouse: WarehouseResource, day: date) -> Path:
    return artifacts_dir(warehouse) / "datasets" / day.isoformat()


def kept_model(context: dg.AssetExecutionContext, warehouse: WarehouseResource, model_id: str,
               prefix: str = "") -> dict[str, Any] | None:
    """The metadata of `model_id` if it is already registered with its artifact intact (this run's algo, member,
    day, config and data trained it before): it is kept as it is, never trained over, since a production row or an
    ensemble may point at its file. None: train it."""
    row = registered_artifact(warehouse.warehouse(), model_id)
    if row is None:
        return None
    context.log.info(f"{model_id} (the same algo, member, day, config and data) is registered with its artifact "
                     f"intact: kept, not retrained (artifacts are never rewritten; change the config or seed to "
                     f"train another model)")
    return {f"{prefix}model_id": model_id, f"{prefix}artifact": dg.MetadataValue.path(row["artifact_path"]),
            f"{prefix}sha256": row["sha256"], f"{prefix}kept": True, f"{prefix}code_version": row["code_version"]}


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
        "feature_fill": dg.MetadataValue.json(manifest["feature_fill"]),
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
        constant = [name for name, state in manifest["feature_fill"].items() if state == CONSTANT]
        if constant:
            context.log.warning(f"features {constant} hold one value per symbol on every row of the dataset: "
                                "they tell the agent nothing here (e.g. session_return on daily bars)")
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
        run = config.training_run(compute, data_dir)
        model_id = model_id_for("clstm_ppo", f"seed{config.seed}", day, run.config_hash(), manifest["data_version"])
        if (kept := kept_model(context, warehouse, model_id)) is not None:
            return dg.MaterializeResult(metadata=kept)
        model_dir = fresh_model_dir(artifacts_dir(warehouse), model_id)
        run = run.with_output(model_dir)
        run_path = run.save(model_dir / RUN_FILE)
        command = compute.trainer_command(str(run_path))
        context.log.info(f"training: {' '.join(command)} ({run.preset}, {run.total_timesteps} steps, actor_lr "
                         f"{run.agent.actor_lr:g}, critic_lr {run.agent.critic_lr:g})")
        # The compute resource's launcher picks the client: this machine, or a GPU pod (same command either way).
        invocation = compute.pipes_client(pipes_subprocess_client).run(
            context=context, **compute.pipes_run_args(str(run_path)))
        reported = invocation.get_materialize_result()
        summary = json.loads(run.output.with_suffix(".json").read_text())
        record = ModelRecord(
            trading_day=day, algo="clstm_ppo", member=f"seed{config.seed}",
            artifact_path=str(run.output),
            sha256=file_sha256(run.output), config_hash=run.config_hash(),
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
            "training_run": dg.MetadataValue.path(str(run_path)),
            "data_version": record.data_version,
            "code_version": record.code_version,
        })

    return [training_dataset, clstm_ppo_policy]
