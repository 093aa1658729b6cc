"""Secrets stay out of what Dagster shows and keeps: the market data resource's reprs, the code location's resource
config (the UI's resource page), the Optuna storage URL of a run config (kept in the run history) and the Helm
values. The broker runs' logs, metadata and files are checked in tests/test_assets_brokers.py."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
from conftest import assets_in_groups
from dagster._core.remote_representation.external_data import RepositorySnap

from pipeline.training.search import STORAGE_VAR, study_storage
from resources.compute import ComputeResource
from resources.sources import MarketDataResource
from resources.warehouse import WarehouseResource

KEY_ID = "PKTESTKEYID42"
SECRET = "s3cr3t-alpaca-value-9f8e7d"
DB_PASSWORD = "hunter2-optuna-db"


def test_market_data_resource_reprs_hide_the_alpaca_key_and_secret() -> None:
    resource = MarketDataResource(source="alpaca", alpaca_api_key=KEY_ID, alpaca_secret_key=SECRET)
    shown = [repr(resource), str(resource), repr(resource.settings()), str(resource.settings())]
    assert "source='alpaca'" in shown[0]  # the repr does show the other fields
    for text in shown:
        assert SECRET not in text and KEY_ID not in text
    assert resource.settings().alpaca_secret_key == SECRET  # hidden, not lost


def test_code_location_shows_the_alpaca_variables_not_their_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALPACA_API_KEY", KEY_ID)
    monkeypatch.setenv("ALPACA_SECRET_KEY", SECRET)
    from pipeline.definitions import build_definitions

    snap = RepositorySnap.from_def(build_definitions().get_repository_def(), defer_snapshots=True)
    (market,) = [r for r in snap.resources if r.name == "market_data"]
    # What the UI's resource page lists: the env var's name stands where the value would.
    assert market.configured_values["alpaca_secret_key"].name == "ALPACA_SECRET_KEY"
    assert market.configured_values["alpaca_api_key"].name == "ALPACA_API_KEY"
    serialized = dg.serialize_value(snap)
    assert SECRET not in serialized and KEY_ID not in serialized


def test_optuna_storage_comes_from_the_run_config_then_the_env_then_the_default() -> None:
    default = "sqlite:///lake/optuna/studies.db"
    shared = f"postgresql+psycopg2://optuna:{DB_PASSWORD}@db.internal/optuna"
    assert study_storage(None, default, environ={}) == default
    assert study_storage(None, default, environ={STORAGE_VAR: shared}) == shared
    no_password = "postgresql+psycopg2://optuna@db.internal/optuna"
    assert study_storage(no_password, default, environ={STORAGE_VAR: shared}) == no_password


def test_a_run_config_storage_url_with_a_password_fails_the_run_naming_the_variable(
    lake_env: dict[str, str],
) -> None:
    (search,) = [a for a in assets_in_groups("search") if a.key == dg.AssetKey("hyperparameter_search")]
    url = f"postgresql+psycopg2://optuna:{DB_PASSWORD}@db.internal/optuna"
    result = dg.materialize(
        [search], partition_key="2024-07-05", raise_on_error=False,
        resources={"warehouse": WarehouseResource(), "compute": ComputeResource()},
        run_config={"ops": {"hyperparameter_search": {"config": {"storage": url}}}},
    )
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    message = failure.step_failure_data.error.cause.message if failure.step_failure_data.error.cause else ""
    message += failure.step_failure_data.error.message
    assert STORAGE_VAR in message and "password" in message
    assert DB_PASSWORD not in message  # the URL is named with its password masked
    assert not (Path(lake_env["PIPELINE_DATA_LAKE"]) / "optuna").exists()  # refused before any storage was opened
