"""`models.registry`: one row per trained model, with what it needs to be traced and reproduced.

A row names the model (`model_id`), the trading day D of the partition that trained it and the window of days it
saw, the algorithm and ensemble member, where its artifact is and that file's sha256, the hash of the config it
was trained with, the code version that trained it, the data version of its dataset, its metrics (JSON) and its
status: every model starts as `candidate`; promotion (evaluation) moves it to `production` or `rejected`.

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
STATUSES = ("candidate", "production", "rejected")
_DDL = f"""CREATE TABLE IF NOT EXISTS {REGISTRY_TABLE} (
    model_id VARCHAR PRIMARY KEY, trading_day DATE, algo VARCHAR, member VARCHAR, artifact_path VARCHAR,
    sha256 VARCHAR, config_hash VARCHAR, code_version VARCHAR, data_version VARCHAR, metrics JSON,
    status VARCHAR, window_start DATE, window_end DATE, registered_at TIMESTAMPTZ)"""
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
        key = "|".join([self.algo, self.member, self.trading_day.isoformat(), self.config_hash, self.data_version])
        return f"{self.algo}-{self.member}-{self.trading_day.isoformat()}-{sha256_text(key)[:10]}"


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


def register_model(store: Warehouse, record: ModelRecord) -> str:
    """Write `record` to models.registry (replacing the row of the same model_id); returns the model_id."""
    row = asdict(record) | {"model_id": record.model_id, "metrics": json.dumps(dict(record.metrics), default=float),
                            "registered_at": datetime.now(UTC)}
    columns = list(row)
    with store.transaction() as con:
        con.execute(_DDL)
        con.execute(f"DELETE FROM {REGISTRY_TABLE} WHERE model_id = ?", [record.model_id])
        placeholders = ", ".join("?" for _ in columns)
        con.execute(f"INSERT INTO {REGISTRY_TABLE} ({', '.join(columns)}) VALUES ({placeholders})",
                    [row[c] for c in columns])
    return record.model_id


def read_registry(store: Warehouse, trading_day: date | None = None) -> pl.DataFrame:
    """The registry's rows (of one trading day if given), oldest registration first."""
    with store.transaction() as con:
        con.execute(_DDL)
        where, params = ("WHERE trading_day = ?", [trading_day]) if trading_day else ("", [])
        return con.sql(f"SELECT * FROM {REGISTRY_TABLE} {where} ORDER BY registered_at, model_id",
                       params=params or None).pl()
