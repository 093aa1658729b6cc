"""deploy/dagster.yaml against a real PostgreSQL server: a partition materialized with that instance is read back.

The server is Debian's PostgreSQL (`initdb` on the PATH, or under /usr/lib/postgresql/<version>/bin where the
package puts it; `.ci/run` installs it where missing), initialized in a temp dir with trust auth on a free local
port. PostgreSQL refuses to run as root, so as root the server runs as the unprivileged `nobody` user.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import psycopg2
import pytest
from conftest import require_system_package
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

from pipeline.definitions import build_definitions
from resources.sources import MarketDataResource
from resources.warehouse import WarehouseResource
from tests.conftest import REPO_ROOT

DEPLOY_INSTANCE = REPO_ROOT / "deploy" / "dagster.yaml"
DAY = "2024-07-03"
RAW_BARS = dg.AssetKey(["raw", "bars"])
UNPRIVILEGED_USER = "nobody"


@dataclass(frozen=True)
class PostgresServer:
    port: int
    user: str = "postgres"
    db_name: str = "postgres"

    def env(self) -> dict[str, str]:
        """The DAGSTER_PG_* variables deploy/dagster.yaml reads."""
        return {"DAGSTER_PG_USERNAME": self.user, "DAGSTER_PG_PASSWORD": "unused-with-trust-auth",
                "DAGSTER_PG_HOST": "127.0.0.1", "DAGSTER_PG_DB": self.db_name, "DAGSTER_PG_PORT": str(self.port)}

    def connect(self):
        return psycopg2.connect(host="127.0.0.1", port=self.port, user=self.user, dbname=self.db_name)


def _postgres_bin() -> Path | None:
    """The folder with initdb and pg_ctl: on the PATH, else the newest Debian package's."""
    on_path = shutil.which("initdb")
    candidates = [on_path] if on_path else sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    for initdb in candidates:
        folder = Path(initdb).resolve().parent
        if (folder / "pg_ctl").exists():
            return folder
    return None


def _run_as() -> dict[str, object]:
    """subprocess arguments that drop root to an unprivileged user (PostgreSQL will not run as root)."""
    if os.geteuid() != 0:
        return {}
    try:
        user = pwd.getpwnam(UNPRIVILEGED_USER)
    except KeyError:
        require_system_package(f"running as root and there is no {UNPRIVILEGED_USER!r} user to run PostgreSQL as "
                               "(Debian's `postgresql` package creates it)")
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_server() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL server; stopped and deleted after the module's tests, whatever they did."""
    bin_dir = _postgres_bin()
    if bin_dir is None:
        require_system_package("no PostgreSQL server binaries (initdb, pg_ctl): install Debian's `postgresql` package")
    as_user = _run_as()
    root = Path(tempfile.mkdtemp(prefix="pipeline-pg-"))
    if as_user:
        os.chown(root, as_user["user"], as_user["group"])  # type: ignore[arg-type]
    data, log = root / "data", root / "server.log"
    try:
        subprocess.run([bin_dir / "initdb", "-D", data, "-U", "postgres", "--auth=trust", "--no-sync",
                        "--encoding=UTF8", "--no-locale"], check=True, capture_output=True, **as_user)
    except subprocess.CalledProcessError as err:
        shutil.rmtree(root, ignore_errors=True)
        require_system_package(f"initdb failed, no PostgreSQL can be started here: {err.stderr.decode()[-500:]}")
    server = PostgresServer(port=_free_port())
    # Durability off: the database is thrown away, and fsyncs would only slow the test down.
    options = (f"-p {server.port} -h 127.0.0.1 -k {root} -c fsync=off -c synchronous_commit=off "
               "-c full_page_writes=off")
    ctl = [bin_dir / "pg_ctl", "-D", data, "-w"]
    try:
        started = subprocess.run([*ctl, "-l", log, "-o", options, "start"], capture_output=True, **as_user)
        if started.returncode != 0:
            require_system_package(f"pg_ctl could not start PostgreSQL: {log.read_text()[-500:] if log.exists() else ''}")
        yield server
    finally:
        subprocess.run([*ctl, "-m", "immediate", "stop"], capture_output=True, **as_user)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_instance(postgres_server: PostgresServer, lake_env: dict[str, str],
                      monkeypatch: pytest.MonkeyPatch) -> Iterator[dg.DagsterInstance]:
    """DAGSTER_HOME holding deploy/dagster.yaml as it is, with the connection given through its env vars."""
    shutil.copy(DEPLOY_INSTANCE, Path(lake_env["DAGSTER_HOME"]) / "dagster.yaml")
    for name, value in postgres_server.env().items():
        monkeypatch.setenv(name, value)
    with dg.DagsterInstance.get() as instance:
        yield instance


def test_deploy_instance_stores_runs_events_and_schedules_in_postgres(
    postgres_instance: dg.DagsterInstance,
) -> None:
    assert isinstance(postgres_instance.run_storage, PostgresRunStorage)
    assert isinstance(postgres_instance.event_log_storage, PostgresEventLogStorage)
    assert isinstance(postgres_instance.schedule_storage, PostgresScheduleStorage)
    assert type(postgres_instance.run_coordinator).__name__ == "QueuedRunCoordinator"
    assert postgres_instance.get_concurrency_config().pool_config.default_pool_limit == 1


def test_partition_materialized_with_the_postgres_instance_is_read_back(
    postgres_server: PostgresServer, postgres_instance: dg.DagsterInstance, lake_env: dict[str, str],
) -> None:
    (raw_bars,) = [a for a in build_definitions().assets if a.key == RAW_BARS]
    result = dg.materialize([raw_bars], partition_key=DAY, instance=postgres_instance,
                            resources={"warehouse": WarehouseResource(), "market_data": MarketDataResource()})
    assert result.success

    # A second instance from the same file sees the run: it lives in PostgreSQL, not in this process.
    with dg.DagsterInstance.get() as reader:
        run = reader.get_run_by_id(result.run_id)
        assert run is not None and run.status == dg.DagsterRunStatus.SUCCESS
        event = reader.get_latest_materialization_event(RAW_BARS)
        assert event is not None and event.run_id == result.run_id
        assert event.asset_materialization.partition == DAY
        # The `duckdb` pool's slots are kept in the same database, with the limit of one from the file.
        assert reader.event_log_storage.get_concurrency_info("duckdb").slot_count == 1
    with postgres_server.connect() as conn, conn.cursor() as cursor:
        cursor.execute("SELECT status FROM runs WHERE run_id = %s", (result.run_id,))
        assert cursor.fetchall() == [("SUCCESS",)]


def test_an_optuna_study_lives_in_postgres_and_a_second_worker_continues_it(
    postgres_server: PostgresServer,
) -> None:
    """The hyperparameter search's storage when configured with a PostgreSQL URL: trials of two study handles (two
    workers) land in one study, and a re-open sees them all.

    The study needs a database of its own: Optuna and Dagster both version their tables with alembic's
    `alembic_version`, and Optuna refuses a database whose version row is Dagster's (seen: "optuna 5.0.0 is no
    longer compatible with the table schema")."""
    import optuna

    from pipeline.training.search import open_storage

    con = postgres_server.connect()
    con.autocommit = True
    with con.cursor() as cur:
        cur.execute("DROP DATABASE IF EXISTS optuna")
        cur.execute("CREATE DATABASE optuna")
    con.close()
    url = f"postgresql+psycopg2://{postgres_server.user}@127.0.0.1:{postgres_server.port}/optuna"
    first = optuna.create_study(study_name="pg-study", storage=open_storage(url), load_if_exists=True,
                                direction="maximize")
    first.optimize(lambda trial: trial.suggest_float("x", 0.0, 1.0), n_trials=2)
    second = optuna.create_study(study_name="pg-study", storage=open_storage(url), load_if_exists=True,
                                 direction="maximize")
    second.optimize(lambda trial: trial.suggest_float("x", 0.0, 1.0), n_trials=3)
    again = optuna.load_study(study_name="pg-study", storage=open_storage(url))
    assert [t.number for t in again.trials] == [0, 1, 2, 3, 4]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in again.trials)
    (summary,) = optuna.get_all_study_summaries(storage=open_storage(url))
    assert summary.study_name == "pg-study" and summary.n_trials == 5
