"""Promotion history on a real DuckDB registry: the model in production on a day is decided by trading days, never
by the order runs finished; an older day's decision after a newer one is refused; a day's gate waits for the
decision of the day before (`pending_decision`)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from pipeline.lake import Warehouse
from pipeline.registry import (
    ModelRecord,
    pending_decision,
    production_as_of,
    promote,
    read_promotions,
    record_gate,
    record_selection,
    register_model,
)

D1, D2, D3, D4 = date(2024, 7, 1), date(2024, 7, 2), date(2024, 7, 3), date(2024, 7, 5)
ALGOS = ("clstm_ppo",)


def _model(store: Warehouse, day: date, seed: int = 0, algo: str = "clstm_ppo") -> str:
    record = ModelRecord(trading_day=day, algo=algo, member=f"seed{seed}", artifact_path="model.safetensors",
                         sha256=f"{seed:064d}", config_hash="c", code_version="v", data_version=f"data-{day}",
                         window_start=day, window_end=day)
    return register_model(store, record)


def _judged(store: Warehouse, day: date, passed: bool) -> str:
    model_id = _model(store, day)
    record_selection(store, day, model_id, {model_id: 0.01}, [str(day)])
    record_gate(store, model_id, passed, "" if passed else "beats_best_baseline: failed")
    return model_id


@pytest.fixture
def store(tmp_path: Path) -> Warehouse:
    return Warehouse(tmp_path / "warehouse.duckdb")


def test_production_is_decided_by_trading_day_not_by_finishing_order(store: Warehouse) -> None:
    first, third = _judged(store, D1, True), _judged(store, D3, True)
    promote(store, first, D1, {})
    promote(store, third, D3, {})
    assert production_as_of(store, D1) is None  # never the model of its own day
    assert production_as_of(store, D2)["model_id"] == first
    assert production_as_of(store, D3)["model_id"] == first
    assert production_as_of(store, D4)["model_id"] == third
    assert read_promotions(store)["previous_model_id"].to_list() == [None, first]


def test_an_older_day_decided_after_a_newer_one_is_refused(store: Warehouse) -> None:
    # A backfill that finished the 07-03 run first: promoting the 07-01 model afterwards would make it production
    # on 07-05 and rewrite which model was live on days already judged.
    third, first = _judged(store, D3, True), _judged(store, D1, True)
    promote(store, third, D3, {})
    with pytest.raises(ValueError, match="already decided on 2024-07-03, a later trading day"):
        promote(store, first, D1, {})
    assert production_as_of(store, D4)["model_id"] == third
    assert read_promotions(store)["model_id"].to_list() == [third]


def test_deciding_a_day_again_replaces_its_promotion(store: Warehouse) -> None:
    first = _judged(store, D1, True)
    promote(store, first, D1, {})
    again = _model(store, D1, seed=1)
    record_gate(store, again, True, "")
    promote(store, again, D1, {})
    promotions = read_promotions(store)
    assert promotions["model_id"].to_list() == [again] and promotions["decided_on"].to_list() == [D1]
    assert production_as_of(store, D2)["model_id"] == again


def test_a_days_decision_is_pending_until_its_gate_and_promotion_ran(store: Warehouse) -> None:
    assert pending_decision(store, D1, ALGOS) is None  # nothing trained that day: nothing to decide
    _model(store, D1, algo="sb3_ppo")
    assert pending_decision(store, D1, ALGOS) is None  # no kind a candidate is chosen among
    model_id = _model(store, D1)
    assert "none was chosen yet" in pending_decision(store, D1, ALGOS)
    record_selection(store, D1, model_id, {model_id: 0.0}, [str(D1)])
    assert "has not judged" in pending_decision(store, D1, ALGOS)
    record_gate(store, model_id, True, "")
    assert "is not promoted yet" in pending_decision(store, D1, ALGOS)
    promote(store, model_id, D1, {})
    assert pending_decision(store, D1, ALGOS) is None
    refused = _judged(store, D2, False)
    assert pending_decision(store, D2, ALGOS) is None and refused  # a refusal is a decision: production stays
