"""`models.registry`: one row per trained model, with what it needs to be traced and reproduced.

A row names the model (`model_id`), the trading day D of the partition that trained it and the window of days it
saw, the algorithm and ensemble member, where its artifact is and that file's sha256, the hash of the config it
was trained with, the code version that trained it, the data version of its dataset, its metrics (JSON) and its
status: every model starts as `candidate`; the promotion gate moves it to `production` or `rejected`, and a
production model that a newer one replaces becomes `retired`. `models.selections` records which model of a day
was chosen on its selection days (the one the gate judges). `models.promotions` keeps every promotion with the
trading day it was decided on, so the model that was in production on any past day can be found again
(`production_as_of`): a backfill of old days evaluates the model that was live then, not today's.

Promotion history is ordered by trading days, never by when runs finished: the model in production on day E is
the last one promoted by a decision of a day before E, a promotion decided on a day older than one already made
is refused, and day D's gate may run only once day D-1's decision is made (`pending_decision`).

The id is a function of (algo, member, trading day, config hash, data version): materializing the same partition
again with the same config and data replaces its row instead of adding a duplicate.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import polars as pl

from pipeline.lake import Warehouse

REGISTRY_TABLE = "models.registry"
PROMOTIONS_TABLE = "models.promotions"
STATUSES = ("candidate", "production", "rejected", "retired")
_DDL = f"""CREATE TABLE IF NOT EXISTS {REGISTRY_TABLE} (
    model_id VARCHAR PRIMARY KEY, trading_day DATE, algo VARCHAR, member VARCHAR, artifact_path VARCHAR,
    sha256 VARCHAR, config_hash VARCHAR, code_version VARCHAR, data_version VARCHAR, metrics JSON,
    status VARCHAR, window_start DATE, window_end DATE, registered_at TIMESTAMPTZ)"""
# Columns added after the first release: registries written before them gain them on first use.
_LATER_COLUMNS = (("status_reason", "VARCHAR"), ("status_changed_at", "TIMESTAMPTZ"), ("deploy_path", "VARCHAR"),
                  ("deploy_sha256", "VARCHAR"), ("gate", "VARCHAR"))
_PROMOTIONS_DDL = f"""CREATE TABLE IF NOT EXISTS {PROMOTIONS_TABLE} (
    model_id VARCHAR, model_trading_day DATE, previous_model_id VARCHAR, decided_on DATE, promoted_at TIMESTAMPTZ,
    reasons JSON)"""
SELECTIONS_TABLE = "models.selections"
_SELECTIONS_DDL = f"""CREATE TABLE IF NOT EXISTS {SELECTIONS_TABLE} (
    trading_day DATE PRIMARY KEY, model_id VARCHAR, score DOUBLE, scores JSON, selection_days JSON,
    selected_at TIMESTAMPTZ)"""
_REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class ModelRecord:
    """One trained model, as `models.registry` holds it."""

    trading_day: date
    algo: str
    member: str
    artifact_path: str
    sha256: str
    config_hash: str
    code_version: str
    data_version: str
    window_start: date
    window_end: date
    metrics: Mapping[str, Any] = field(default_factory=dict)
    status: str = "candidate"

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"model status must be one of {STATUSES}, got {self.status!r}")
        if self.window_end > self.trading_day:
            raise ValueError(f"a model of {self.trading_day} cannot be trained on days up to {self.window_end}")

    @property
    def model_id(self) -> str:
        return model_id_for(self.algo, self.member, self.trading_day, self.config_hash, self.data_version)


def model_id_for(algo: str, member: str, trading_day: date, config_hash: str, data_version: str) -> str:
    """The id of the model `algo`/`member` trained for `trading_day` with this config on this data: known before
    training, so the model's folder is named by it (`pipeline.model_store`)."""
    key = "|".join([algo, member, trading_day.isoformat(), config_hash, data_version])
    return f"{algo}-{member}-{trading_day.isoformat()}-{sha256_text(key)[:10]}"


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def config_hash(config: Mapping[str, Any]) -> str:
    """sha256 of the config as canonical JSON (sorted keys), so equal configs hash equal whatever their order."""
    return sha256_text(json.dumps(config, sort_keys=True, separators=(",", ":"), default=str))


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def code_version() -> str:
    """The git commit of this checkout (with `+dirty` when tracked files differ), else the package version."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=_REPO, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=_REPO,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        try:
            return "rl-trading-pipeline " + metadata.version("rl-trading-pipeline")
        except metadata.PackageNotFoundError:
            return "unknown"


def _ensure_tables(con: Any) -> None:
    con.execute(_DDL)
    for name, sql_type in _LATER_COLUMNS:
        con.execute(f"ALTER TABLE {REGISTRY_TABLE} ADD COLUMN IF NOT EXISTS {name} {sql_type}")
    con.execute(_PROMOTIONS_DDL)
    con.execute(_SELECTIONS_DDL)


def register_model(store: Warehouse, record: ModelRecord) -> str:
    """Write `record` to models.registry (replacing the row of the same model_id); returns the model_id.

    A re-run that reproduces the same file (same sha256) keeps the row's status: retraining bit-identical weights
    does not demote a production model. Different weights start over as `candidate`."""
    row = asdict(record) | {"model_id": record.model_id, "metrics": json.dumps(dict(record.metrics), default=float),
                            "registered_at": datetime.now(UTC)}
    with store.transaction() as con:
        _ensure_tables(con)
        kept = con.execute(f"SELECT status, status_reason, status_changed_at FROM {REGISTRY_TABLE} "
                           "WHERE model_id = ? AND sha256 = ?", [record.model_id, record.sha256]).fetchone()
        if kept is not None:
            row |= {"status": kept[0], "status_reason": kept[1], "status_changed_at": kept[2]}
        columns = list(row)
        con.execute(f"DELETE FROM {REGISTRY_TABLE} WHERE model_id = ?", [record.model_id])
        placeholders = ", ".join("?" for _ in columns)
        con.execute(f"INSERT INTO {REGISTRY_TABLE} ({', '.join(columns)}) VALUES ({placeholders})",
                    [row[c] for c in columns])
    return record.model_id


def read_registry(store: Warehouse, trading_day: date | None = None) -> pl.DataFrame:
    """The registry's rows (of one trading day if given), oldest registration first."""
    with store.transaction() as con:
        _ensure_tables(con)
        where, params = ("WHERE trading_day = ?", [trading_day]) if trading_day else ("", [])
        return con.sql(f"SELECT * FROM {REGISTRY_TABLE} {where} ORDER BY registered_at, model_id",
                       params=params or None).pl()


def get_model(store: Warehouse, model_id: str) -> dict[str, Any]:
    """The registry row of `model_id` (metrics parsed); a clear error if it is not registered."""
    with store.transaction() as con:
        _ensure_tables(con)
        rows = con.sql(f"SELECT * FROM {REGISTRY_TABLE} WHERE model_id = ?", params=[model_id]).pl().to_dicts()
    if not rows:
        raise ValueError(f"model {model_id!r} is not in {REGISTRY_TABLE}; materialize its training partition")
    return rows[0] | {"metrics": json.loads(rows[0]["metrics"] or "{}")}


def set_status(store: Warehouse, model_id: str, status: str, reason: str) -> None:
    """Move `model_id` to `status` (`rejected`, `candidate`), saying why; promotion goes through `promote`."""
    if status not in STATUSES or status == "production":
        raise ValueError(f"set_status takes one of {[s for s in STATUSES if s != 'production']}; use promote()")
    get_model(store, model_id)
    with store.transaction() as con:
        con.execute(f"UPDATE {REGISTRY_TABLE} SET status = ?, status_reason = ?, status_changed_at = ? "
                    "WHERE model_id = ?", [status, reason, datetime.now(UTC), model_id])


def promote(store: Warehouse, model_id: str, decided_on: date, reasons: Mapping[str, Any]) -> str | None:
    """Make `model_id` the production model by the decision of trading day `decided_on`, in one transaction: the
    current production model (if any) becomes `retired`, and `models.promotions` records the change. Returns the
    model in production before `decided_on` (None if none).

    Only a model whose current deployment artifact passed the gate can be promoted (the caller checks that the
    artifact's files still hash to `deploy_sha256`). A decision of a day older than one already recorded is
    refused: it would change which model was live on days already judged. Deciding the same day again replaces
    that day's promotion."""
    model = get_model(store, model_id)
    if model.get("gate") != "passed":
        raise ValueError(f"{model_id} has not passed the promotion gate (gate: {model.get('gate')}, status: "
                         f"{model['status']}, {model.get('status_reason') or 'no reason recorded'}); materialize "
                         "its deployment_artifact, whose blocking checks are the gate")
    now = datetime.now(UTC)
    with store.transaction() as con:
        _ensure_tables(con)
        newer = con.execute(f"SELECT max(decided_on) FROM {PROMOTIONS_TABLE} WHERE decided_on > ?",
                            [decided_on]).fetchone()[0]
        if newer is not None:
            raise ValueError(
                f"refusing to promote {model_id} by the decision of {decided_on}: a promotion was already decided on "
                f"{newer}, a later trading day. Promotions are ordered by trading day, so an older day cannot be "
                f"decided after a newer one; re-run the days from {decided_on} on in order (production_model of "
                f"{newer} and later would have to be decided again)")
        before = con.execute(f"SELECT model_id FROM {PROMOTIONS_TABLE} WHERE decided_on < ? "
                             "ORDER BY decided_on DESC, promoted_at DESC LIMIT 1", [decided_on]).fetchone()
        previous = before[0] if before else None
        con.execute(f"DELETE FROM {PROMOTIONS_TABLE} WHERE decided_on = ?", [decided_on])
        con.execute(f"UPDATE {REGISTRY_TABLE} SET status = 'retired', status_reason = ?, status_changed_at = ? "
                    "WHERE status = 'production' AND model_id != ?", [f"replaced by {model_id}", now, model_id])
        con.execute(f"UPDATE {REGISTRY_TABLE} SET status = 'production', status_reason = ?, status_changed_at = ? "
                    "WHERE model_id = ?", [f"promoted on {decided_on}", now, model_id])
        con.execute(f"INSERT INTO {PROMOTIONS_TABLE} VALUES (?, ?, ?, ?, ?, ?)",
                    [model_id, model["trading_day"], previous, decided_on, now,
                     json.dumps(dict(reasons), default=float)])
    return previous


def production_as_of(store: Warehouse, day: date) -> dict[str, Any] | None:
    """The model in production on trading day `day`: the last one promoted by a decision of a trading day before
    `day` (so never a model that saw `day`), or None. Which decision is last goes by trading day, never by when
    the runs happened to finish."""
    with store.transaction() as con:
        _ensure_tables(con)
        row = con.execute(
            f"SELECT model_id FROM {PROMOTIONS_TABLE} WHERE decided_on < ? "
            "ORDER BY decided_on DESC, promoted_at DESC LIMIT 1", [day]
        ).fetchone()
    return get_model(store, row[0]) if row else None


def read_promotions(store: Warehouse) -> pl.DataFrame:
    """`models.promotions`, in the order of the trading days they were decided on."""
    with store.transaction() as con:
        _ensure_tables(con)
        return con.sql(f"SELECT * FROM {PROMOTIONS_TABLE} ORDER BY decided_on, promoted_at").pl()


def record_selection(store: Warehouse, trading_day: date, model_id: str, scores: Mapping[str, float],
                     selection_days: list[str]) -> None:
    """The model of `trading_day` chosen on its selection days (`scores`: every model's score there), replacing
    the day's earlier choice."""
    with store.transaction() as con:
        _ensure_tables(con)
        con.execute(f"DELETE FROM {SELECTIONS_TABLE} WHERE trading_day = ?", [trading_day])
        con.execute(f"INSERT INTO {SELECTIONS_TABLE} VALUES (?, ?, ?, ?, ?, ?)",
                    [trading_day, model_id, float(scores[model_id]), json.dumps(dict(scores), default=float),
                     json.dumps(list(selection_days)), datetime.now(UTC)])


def selected_model(store: Warehouse, trading_day: date) -> dict[str, Any] | None:
    """The registry row of the model chosen for `trading_day` (None if no choice was recorded), with
    `selection_scores`: every model the choice scored, and its score."""
    with store.transaction() as con:
        _ensure_tables(con)
        row = con.execute(f"SELECT model_id, scores FROM {SELECTIONS_TABLE} WHERE trading_day = ?",
                          [trading_day]).fetchone()
    return get_model(store, row[0]) | {"selection_scores": json.loads(row[1])} if row else None


def pending_decision(store: Warehouse, trading_day: date, algos: tuple[str, ...]) -> str | None:
    """Why the promotion decision of `trading_day` is not made yet, or None when it is (or there is nothing to
    decide: no model of `algos`, the kinds a candidate is chosen among, was registered that day). Day D's gate
    compares its candidate with the model in production on D, which the decision of D-1 may change: it waits for
    it."""
    registered = read_registry(store, trading_day)
    if registered.filter(pl.col("algo").is_in(list(algos))).is_empty():
        return None
    chosen = selected_model(store, trading_day)
    if chosen is None:
        return f"models of {trading_day} are registered but none was chosen yet (materialize candidate_selection)"
    if chosen.get("gate") is None:
        return (f"the gate has not judged {chosen['model_id']}, the candidate of {trading_day}, yet "
                "(materialize candidate_evaluation and deployment_artifact)")
    if chosen["gate"] == "passed":
        with store.transaction() as con:
            promoted = con.execute(f"SELECT model_id FROM {PROMOTIONS_TABLE} WHERE decided_on = ?",
                                   [trading_day]).fetchone()
        if promoted is None or promoted[0] != chosen["model_id"]:
            return (f"{chosen['model_id']}, the candidate of {trading_day}, passed the gate but is not promoted yet "
                    "(materialize production_model)")
    return None


def record_deployment(store: Warehouse, model_id: str, deploy_path: str, deploy_sha256: str) -> None:
    """Write where a model's deployment artifact is and its sha256; a new artifact has not been judged yet."""
    get_model(store, model_id)
    with store.transaction() as con:
        con.execute(f"UPDATE {REGISTRY_TABLE} SET deploy_path = ?, deploy_sha256 = ?, gate = NULL WHERE model_id = ?",
                    [deploy_path, deploy_sha256, model_id])


def record_gate(store: Warehouse, model_id: str, passed: bool, reason: str) -> None:
    """The promotion gate's verdict on a model's current artifact: `passed` lets `promote` proceed; a failure
    also marks the model `rejected` with the reason."""
    get_model(store, model_id)
    with store.transaction() as con:
        con.execute(f"UPDATE {REGISTRY_TABLE} SET gate = ? WHERE model_id = ?",
                    ["passed" if passed else "failed", model_id])
    if not passed:
        set_status(store, model_id, "rejected", reason)
