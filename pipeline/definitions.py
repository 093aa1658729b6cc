"""The Dagster code location: one `Definitions` with the assets, checks, resources, sensor, schedule and jobs.

`dagster dev -w workspace.yaml` and `dagster asset materialize -m pipeline.definitions` load `defs` from here.
Environment read while building (PIPELINE_PARTITIONS_START, and PIPELINE_OPTION_SNAPSHOT_MINUTES for the collector's
cron) happens here, once, when the location loads.
"""

from __future__ import annotations

import dagster as dg

from assets.collector import build_collector_schedule, collect_option_chains
from assets.deployment import build_deployment_assets
from assets.evaluation import build_evaluation_assets
from assets.feature_checks import build_feature_checks
from assets.features import FEATURES_GROUP, build_feature_assets
from assets.ingest import INGEST_GROUP, build_ingest_assets
from assets.options_evaluation import build_options_evaluation_assets
from assets.options_training import build_options_training_assets
from assets.search import build_search_assets
from assets.selection import build_selection_assets
from assets.training import build_training_assets
from assets.training_sb3 import build_training_baseline_assets
from pipeline.partitions import partitions_start_from_env, trading_day_partitions
from pipeline.schedules import build_daily_job, build_daily_schedule
from pipeline.sensors import build_landing_sensor, run_failure_summary
from pipeline.sources.settings import option_snapshot_minutes_from_env
from resources.compute import ComputeResource
from resources.sources import MarketDataResource, alpaca_key_fields
from resources.warehouse import WarehouseResource


def build_definitions() -> dg.Definitions:
    """Build the code location; PIPELINE_PARTITIONS_START sets the first partition (default 2024-01-02)."""
    partitions_def = trading_day_partitions(partitions_start_from_env())
    assets = [
        *build_ingest_assets(partitions_def),
        *build_feature_assets(partitions_def),
        *build_training_assets(partitions_def),
        *build_training_baseline_assets(partitions_def),
        *build_selection_assets(partitions_def),
        *build_search_assets(partitions_def),
        *build_evaluation_assets(partitions_def),
        *build_deployment_assets(partitions_def),
        # The options agent: its own product (dataset, policy, backtest and gate, deployment).
        *build_options_training_assets(partitions_def),
        *build_options_evaluation_assets(partitions_def),
    ]
    daily_job = build_daily_job()
    return dg.Definitions(
        assets=assets,
        asset_checks=build_feature_checks(),
        jobs=[daily_job, collect_option_chains],
        schedules=[build_daily_schedule(daily_job), build_collector_schedule(option_snapshot_minutes_from_env())],
        sensors=[
            build_landing_sensor(dg.AssetSelection.groups(INGEST_GROUP, FEATURES_GROUP), partitions_def),
            run_failure_summary,
        ],
        resources={
            "warehouse": WarehouseResource(),
            "market_data": MarketDataResource(**alpaca_key_fields()),
            "compute": ComputeResource(),
            "pipes_subprocess_client": dg.PipesSubprocessClient(),
        },
    )


defs = build_definitions()
