"""The choice of day D's candidate (group `training`), partitioned by trading day, made on the selection days alone.

- `candidate_selection`: every CLSTM-PPO model registered for D on D's current dataset (each seed) walks the
  selection days of D's dataset, with costs, and the one with the best mean daily net return becomes D's candidate
  (`pipeline.backtest.selection`). The choice goes to `models.selections`, the rows it rests on to
  `evaluation.selection_returns`. It reads no gate day: the gate (`candidate_evaluation`, `deployment_artifact`)
  judges the chosen model on days nothing chose on, and the walk-forward backtest of D+1 runs the same model.
"""

from datetime import date

import dagster as dg
import polars as pl

from assets.training import CLSTM_KEY, DATASET_KEY, TRAINING_GROUP, dataset_dir, one_day
from pipeline.backtest.inputs import RegisteredPolicy, dataset_part, load_registered
from pipeline.backtest.selection import Selection, select_candidate
from pipeline.lake import Warehouse
from pipeline.registry import get_model, record_selection, selected_model
from pipeline.training.dataset import load_manifest
from pipeline.training.ensembles import registered_members
from resources.warehouse import WarehouseResource

SELECTION_KEY = dg.AssetKey("candidate_selection")
SELECTION_TABLE = "evaluation.selection_returns"
CANDIDATE_ALGOS = ("clstm_ppo",)
"""The registry algorithms a day's candidate is chosen among."""


def candidates_of(store: Warehouse, warehouse: WarehouseResource, day: date) -> list[RegisteredPolicy]:
    """The CLSTM-PPO models trained on day `day`'s current dataset (every seed), loaded."""
    data_version = load_manifest(dataset_dir(warehouse, day))["data_version"]
    members = registered_members(store, day, data_version, algos=CANDIDATE_ALGOS)
    if not members:
        raise ValueError(f"no CLSTM-PPO model of {day} on its current dataset is registered: materialize "
                         f"clstm_ppo_policy for {day} first")
    return [load_registered(get_model(store, m.model_id)) for m in members]


def chosen_candidate(store: Warehouse, warehouse: WarehouseResource, day: date) -> RegisteredPolicy | None:
    """The candidate chosen for `day`, loaded; None when no choice is recorded. A choice made on an older dataset
    of the day (rebuilt since) is refused: choose again."""
    row = selected_model(store, day)
    if row is None:
        return None
    current = load_manifest(dataset_dir(warehouse, day))["data_version"]
    if row["data_version"] != current:
        raise ValueError(f"the candidate chosen for {day} ({row['model_id']}) was trained on another version of the "
                         f"day's dataset ({row['data_version'][:12]}, now {current[:12]}): materialize "
                         f"clstm_ppo_policy and candidate_selection for {day} again")
    return load_registered(row)


def _scores_markdown(selection: Selection) -> str:
    lines = ["| model | mean daily net return on the selection days | chosen |", "|---|---|---|"]
    for model_id, score in sorted(selection.scores.items(), key=lambda kv: (-kv[1], kv[0])):
        lines.append(f"| {model_id} | {score:+.3%} | {'yes' if model_id == selection.chosen else ''} |")
    return "\n".join(lines)


def build_selection_assets(partitions_def: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    @dg.asset(
        key=SELECTION_KEY,
        deps=[CLSTM_KEY, DATASET_KEY],
        group_name=TRAINING_GROUP,
        kinds={"duckdb", "pytorch"},
        partitions_def=partitions_def,
        pool="duckdb",
        description="D's candidate: the model of D with the best mean daily net return on the selection days of "
        "D's dataset (never its gate days); recorded in models.selections.",
    )
    def candidate_selection(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
        day = one_day(context)
        store = warehouse.warehouse()
        models = candidates_of(store, warehouse, day)
        selection, rows = select_candidate(models, dataset_part(models[0].dataset_dir, "selection"))
        record_selection(store, day, selection.chosen, selection.scores, list(selection.days))
        store.write_partition(SELECTION_TABLE, [day], rows.rename({"trading_day": "selection_day"})
                              .with_columns(pl.lit(day).alias("trading_day")))
        context.log.info(f"candidate of {day}: {selection.chosen} among {len(models)} model(s)")
        return dg.MaterializeResult(metadata={
            "candidate_model": selection.chosen,
            "candidate_score": selection.scores[selection.chosen],
            "models": len(models),
            "selection_days": dg.MetadataValue.json(list(selection.days)),
            "scores": dg.MetadataValue.md(_scores_markdown(selection)),
        })

    return [candidate_selection]
