"""The DuckDB warehouse as a Dagster resource: where the lake is, and a `Warehouse` to read and write it."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from pydantic import Field

from pipeline.lake import Warehouse, lake_dir


class WarehouseResource(dg.ConfigurableResource):
    """The data lake holding `warehouse.duckdb` and `landing/`.

    `lake_path` unset means PIPELINE_DATA_LAKE, else ./data_lake; resolved when the resource is used, so tests
    can point a run at a temp dir through the environment.
    """

    lake_path: str | None = Field(
        default=None, description="Data lake directory; unset: PIPELINE_DATA_LAKE, else ./data_lake."
    )

    def lake(self) -> Path:
        """The lake directory (not created here; the warehouse creates what it writes)."""
        return (Path(self.lake_path) if self.lake_path else lake_dir()).resolve()

    def database_path(self) -> Path:
        return self.lake() / "warehouse.duckdb"

    def warehouse(self) -> Warehouse:
        return Warehouse(self.database_path())
