"""Shared fixtures: every test gets its own data lake and Dagster instance (temp dirs, set through the env)."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_GROUPS = ("ingest", "features")
INSTANCE_TEMPLATE = REPO_ROOT / "dagster_home" / "dagster.yaml"
# Two symbols keep Dagster-level tests fast; the core tests cover the full synthetic universe.
TEST_SYMBOLS = "SPY,QQQ"
# Env vars a developer's shell may set that would change what the tests ingest.
_PIPELINE_VARS = (
    "PIPELINE_SOURCE", "PIPELINE_PARTITIONS_START", "PIPELINE_SYNTHETIC_SEED", "PIPELINE_SYNTHETIC_ALPHA",
    "PIPELINE_SYNTHETIC_SNAPSHOT_MINUTES", "PIPELINE_SYNTHETIC_IV_PREMIUM", "ALPACA_API_KEY", "ALPACA_SECRET_KEY",
)


def pipeline_env(root: Path) -> dict[str, str]:
    """Env for one isolated pipeline under `root`: a lake, a Dagster home with the repo's instance config."""
    lake, home = root / "data_lake", root / "dagster_home"
    lake.mkdir(parents=True, exist_ok=True)
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(INSTANCE_TEMPLATE, home / "dagster.yaml")
    return {
        "PIPELINE_DATA_LAKE": str(lake),
        "DAGSTER_HOME": str(home),
        "PIPELINE_SYNTHETIC_SYMBOLS": TEST_SYMBOLS,
    }


def _apply(mp: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for name in _PIPELINE_VARS:
        mp.delenv(name, raising=False)
    for name, value in env.items():
        mp.setenv(name, value)


@pytest.fixture
def lake_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A fresh lake and Dagster home for one test (PIPELINE_DATA_LAKE, DAGSTER_HOME set)."""
    env = pipeline_env(tmp_path)
    _apply(monkeypatch, env)
    return env


@pytest.fixture(scope="module")
def module_lake_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Like lake_env, shared by a module's tests so they can share one (slow) materialization."""
    env = pipeline_env(tmp_path_factory.mktemp("pipeline"))
    with pytest.MonkeyPatch.context() as mp:
        _apply(mp, env)
        yield env


@pytest.fixture(scope="session")
def lake_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder this test session's workers share (pytest-xdist gives each worker a basetemp under one parent)."""
    base = tmp_path_factory.getbasetemp()
    folder = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "lake-cache"
    folder.mkdir(exist_ok=True)
    return folder


# Variables that say where a test's lake and instance live, not what goes into them: every test has its own.
_PLACE_VARS = frozenset({"PIPELINE_DATA_LAKE", "DAGSTER_HOME"})


def lake_cache_key(name: str, **data: object) -> str:
    """The `build_once` key of a lake: `name` and a digest of everything that changes what the build writes.

    That is `data` (the days, the market resource, the landed files' seed: whatever the build takes) and every
    PIPELINE_* variable set now (the synthetic market's seed, alpha, symbols and snapshot minutes, the source, ...),
    read when the key is made, inside the environment the build runs in. Where the lake and the Dagster home live
    is not part of it.
    """
    env = sorted((k, v) for k, v in os.environ.items() if k.startswith("PIPELINE_") and k not in _PLACE_VARS)
    material = repr((sorted(data.items()), env)).encode()
    return f"{name}-{hashlib.sha256(material).hexdigest()[:16]}"


def build_once(cache: Path, key: str, lake: Path, build: Callable[[], None]) -> None:
    """Fill the empty `lake` with what `build()` writes into it, built once per test session under `key` (made by
    `lake_cache_key`, so two builds that would write different data never share a key).

    Modules that ingest the same days of the same market share one build: the first builds in its own lake and
    keeps a copy; the others (on any worker) wait for it and copy it. A lake is files only (DuckDB, landing), so
    the copy is the build.
    """
    from pipeline.lake_lock import file_lock

    kept = cache / key
    with file_lock(cache / f"{key}.lock", timeout_s=1800):
        if not kept.is_dir():
            build()
            partial = cache / f"{key}.partial"
            shutil.copytree(lake, partial, ignore=shutil.ignore_patterns("*.lock"))
            partial.rename(kept)
            return
    shutil.copytree(kept, lake, dirs_exist_ok=True)


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A localhost port that refuses every connection for the whole test.

    The socket stays bound but never listens: Linux answers a connect to it with ECONNREFUSED at once, and no other
    process can bind the port while it is held. (A port bound and closed again is free for anyone to take.)
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def assets_in_groups(*groups: str) -> list:
    """The code location's assets of `groups`: a run handed every asset needs every asset's resources (training
    needs `compute` and a Pipes client), even for the ones a selection leaves out. Imports dagster only when called
    (the GPU machine runs tests/test_cuda.py without it)."""
    from pipeline.definitions import build_definitions

    return [a for a in build_definitions().assets if set(a.group_names_by_key.values()) & set(groups)]


def materialized_metadata(result: object, node: str) -> dict:
    """The plain values of the metadata of the one materialization of `node` in a `dg.materialize` result."""
    (materialization,) = result.asset_materializations_for_node(node)  # type: ignore[attr-defined]
    return {k: v.value for k, v in materialization.metadata.items()}


def ingest_history(days: list, market_data: object | None = None) -> None:
    """Ingest and featurize `days` (oldest first) in one single-run range backfill on the lake of the environment."""
    import dagster as dg

    from resources.sources import MarketDataResource
    from resources.warehouse import WarehouseResource

    tags = {"dagster/asset_partition_range_start": days[0].isoformat(),
            "dagster/asset_partition_range_end": days[-1].isoformat()}
    result = dg.materialize(assets_in_groups(*DATA_GROUPS), tags=tags, resources={
        "warehouse": WarehouseResource(), "market_data": market_data or MarketDataResource()})
    assert result.success


def load_script(relative_path: str):
    """A repo script (benchmarks/, scripts/) loaded as a module, so tests call its functions."""
    import importlib.util

    path = REPO_ROOT / relative_path
    if str(path.parent) not in sys.path:  # its siblings import as they do when it runs as a script (last, so
        sys.path.append(str(path.parent))  # nothing of the project's is shadowed)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses (and pickling for worker processes) look the module up there
    spec.loader.exec_module(module)
    return module


# Files whose tests take minutes (the learning controls, the walk-forward loop). `make test` hands files to its 2
# workers in collection order (`--no-loadscope-reorder`: xdist's default puts the files with the most tests first,
# and these one-test files ran alone at the end while the other worker idled). Collected first, they start at once
# and the many short files fill in around them.
LONG_FILES = (
    "test_assets_training_learns.py",
    "test_learning.py",
    "test_learning_leak.py",
    "test_learning_martingale.py",
    "test_assets_evaluation.py",
    "test_gate_calibration_bench.py",
    "test_promotion_order.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONG_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


# Values of CI that mean "this is CI" (CI services set "true"; "false" or "0" must not count).
CI_TRUE_VALUES = ("true", "1", "yes")


def running_in_ci() -> bool:
    """Whether the CI env var holds a truthy value."""
    return os.environ.get("CI", "").strip().lower() in CI_TRUE_VALUES


def require_system_package(missing: str) -> None:
    """A test needs a Debian package that is not here: fail under CI (`.ci/run` installs it, so its absence is a
    broken CI, not a reason to pass), skip on a developer machine that lacks it."""
    if running_in_ci():
        pytest.fail(f"{missing} (CI=true: .ci/run was to install it)")
    pytest.skip(missing)
