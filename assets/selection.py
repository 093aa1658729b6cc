"""The choice of day D's candidate (group `training`), partitioned by trading day, made on the selection days alone.

- `candidate_selection`: every intraday model registered for D on D's current dataset (CLSTM-PPO seeds, SB3 PPO,
  the ensemble) walks the selection days of D's dataset, with costs, and the one with the best mean daily net
  return becomes D's candidate (`pipeline.backtest.selection`; the ensemble's score is optimistic, since its
  weights were fit on the same days). Every other model of the day is `rejected` with its score against the
  chosen one's. The choice goes to `models.selections`, the rows it rests on to `evaluation.selection_returns`.
  It reads no gate day: the gate (`candidate_evaluation`, `deployment_artifact`) judges the chosen model, whatever
  its kind, on days nothing chose on, and the walk-forward backtest of D+1 runs it and each kind's models.
"""

from datetime import date

import dagster as dg
import polars as pl

from assets.training import CLSTM_KEY, DATASET_KEY, TRAINING_GROUP, dataset_dir, one_day
from assets.training_sb3 import BASELINES_KEY, ENSEMBLE_KEY
from pipeline.backtest.inputs import INTRADAY_KINDS, RegisteredPolicy, dataset_part, load_registered
from pipeline.backtest.selection import Selection, day_models, record_choice, select_candidate
from pipeline.lake import Warehouse
from pipeline.registry import get_model, selected_model
from pipeline.training.dataset import load_manifest
from resources.warehouse import WarehouseResource

SELECTION_KEY = dg.AssetKey("candidate_selection")
SELECTION_TABLE = "evaluation.selection_returns"
CANDIDATE_ALGOS = INTRADAY_KINDS
"""The registry algorithms a day's candidate is chosen among."""


def candidates_of(store: Warehouse, warehouse: WarehouseResource,
                  day: date) -> tuple[list[RegisteredPolicy], dict[str, str]]:
    """The intraday models trained on day `day`'s current dataset, loaded, and those that cannot be, with why."""
    data_version = load_manifest(dataset_dir(warehouse, day))["data_version"]
    rows, refused = day_models(store, day, data_version)
    if not rows:
        raise ValueError(f"no intraday model of {day} on its current dataset is registered: materialize "
                         f"clstm_ppo_policy (and sb3_baselines, ensemble_policy) for {day} first")
    return [load_registered(get_model(store, row["model_id"])) for row in rows], refused


def chosen_candidate(store: Warehouse, warehouse: WarehouseResource, day: date) -> RegisteredPolicy | None:
    """The candidate chosen for `day`, loaded; None when no choice is recorded. A choice made on an older dataset
    of the day (rebuilt since) is refused: choose again."""
    row = selected_model(store, day)
    if row is None:
        return None
    current = load_manifest(dataset_dir(warehouse, day))["data_version"]
    if row["data_version"] != current:
        raise ValueError(f"the candidate chosen for {day} ({row['model_id']}) was trained on another version of the "
                         f"day's dataset ({row['data_version'][:12]}, now {current[:12]}): materialize the day's "
                         f"training assets and candidate_selection for {day} again")
    return load_registered(row)


def scored_models(store: Warehouse, day: date) -> tuple[list[RegisteredPolicy], list[str]]:
    """Every model the choice of `day` scored (each kind's), loaded, and why any of them could not be loaded."""
    row = selected_model(store, day)
    loaded, problems = [], []
    for model_id in sorted(row["selection_scores"]) if row else []:
        try:
            loaded.append(load_registered(get_model(store, model_id)))
        except ValueError as problem:
            problems.append(f"{model_id}: {problem}")
    return loaded, problems


def _scores_markdown(selection: Selection, kinds: dict[str, str]) -> str:
    lines = ["| model | kind | mean daily net return on the selection days | chosen |", "|---|---|---|---|"]
    for model_id, score in sorted(selection.scores.items(), key=lambda kv: (-kv[1], kv[0])):
        lines.append(f"| {model_id} | {kinds[model_id]} | {score:+.3%} | "
                     f"{'yes' if model_id == selection.chosen else ''} |")
    return "\n".join(lines)


def build_selection_assets(partitions_def: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    @dg.asset(
        key=SELECTION_KEY,
        deps=[CLSTM_KEY, BASELINES_KEY, ENSEMBLE_KEY, DATASET_KEY],
        group_name=TRAINING_GROUP,
        kinds={"duckdb", "pytorch"},
        partitions_def=partitions_def,
        pool="duckdb",
        description="D's candidate: the intraday model of D (CLSTM-PPO seeds, SB3 PPO, the ensemble) with the best "
        "mean daily net return on the selection days of D's dataset (never its gate days); recorded in "
        "models.selections; every other model of D is rejected with its score.",
    )
    def candidate_selection(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
        day = one_day(context)
        store = warehouse.warehouse()
        models, refused = candidates_of(store, warehouse, day)
        selection, rows = select_candidate(models, dataset_part(models[0].dataset_dir, "selection"))
        record_choice(store, day, selection, refused)
        store.write_partition(SELECTION_TABLE, [day], rows.rename({"trading_day": "selection_day"})
                              .with_columns(pl.lit(day).alias("trading_day")))
        kinds = {m.model_id: m.row["algo"] for m in models}
        context.log.info(f"candidate of {day}: {selection.chosen} among {len(models)} model(s) of kinds "
                         f"{sorted(set(kinds.values()))}")
        for model_id, reason in refused.items():
            context.log.warning(f"{model_id} is rejected unscored: {reason}")
        return dg.MaterializeResult(metadata={
            "candidate_model": selection.chosen,
            "candidate_kind": kinds[selection.chosen],
            "candidate_score": selection.scores[selection.chosen],
            "models": len(models),
            "kinds": dg.MetadataValue.json(dict(sorted(kinds.items()))),
            "selection_days": dg.MetadataValue.json(list(selection.days)),
            "scores": dg.MetadataValue.md(_scores_markdown(selection, kinds)),
            "refused": dg.MetadataValue.json(refused),
        })

    return [candidate_selection]
