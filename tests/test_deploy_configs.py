"""The cluster configs in deploy/ load and Dagster accepts them (validated, not run: no cluster here), and the
compute resource's launcher picks the Pipes client and builds the trainer's GPU pod from deploy/k8s/trainer-pod.yaml.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml
from dagster._config import validate_config
from dagster._core.instance.config import dagster_instance_config
from dagster_k8s import K8sRunLauncher, PipesK8sClient, k8s_job_executor
from dagster_k8s.pipes import build_pod_body

from resources.compute import GPU_RESOURCE, TRAINER_MODULE, ComputeResource
from tests.conftest import REPO_ROOT

DEPLOY = REPO_ROOT / "deploy"
CONFIG_PATH = "/opt/dagster/data_lake/artifacts/models/clstm_ppo-seed0-2024-07-05-0123456789/training_run.json"


def load(relative: str) -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / relative).read_text())


def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def validated_instance(tmp_path: Path, config: dict[str, Any]) -> dict[str, Any]:
    """The instance config as Dagster loads a dagster.yaml (schema and cross-section checks), without building it."""
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(config))
    value, _ = dagster_instance_config(str(tmp_path))
    return value


def assert_accepted(schema: Any, config: dict[str, Any]) -> None:
    result = validate_config(schema, config)
    assert result.success, [error.message for error in result.errors]


# --- the instance and the run launcher (deploy/dagster.yaml + deploy/k8s/run-launcher.yaml) -----------------------

def test_instance_with_the_k8s_run_launcher_is_a_valid_dagster_yaml(tmp_path: Path) -> None:
    # The README's recipe: the run-launcher section appended to the PostgreSQL instance file.
    text = (DEPLOY / "dagster.yaml").read_text() + (DEPLOY / "k8s" / "run-launcher.yaml").read_text()
    config = validated_instance(tmp_path, yaml.safe_load(text))
    launcher = config["run_launcher"]
    assert (launcher["module"], launcher["class"]) == ("dagster_k8s", "K8sRunLauncher")
    assert_accepted(K8sRunLauncher.config_type(), launcher["config"])
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert config["concurrency"]["pools"]["default_limit"] == 1


def test_run_launcher_config_errors_are_caught_by_the_schema() -> None:
    # The check above can fail: the launcher refuses a config without its instance ConfigMap, or with a typo.
    config = load("k8s/run-launcher.yaml")["run_launcher"]["config"]
    without_map = {k: v for k, v in config.items() if k != "instance_config_map"}
    assert not validate_config(K8sRunLauncher.config_type(), without_map).success
    assert not validate_config(K8sRunLauncher.config_type(), config | {"job_namespac": "x"}).success


# --- the step executor (deploy/k8s/executor.yaml) ------------------------------------------------------------------

@dg.op
def _step() -> int:
    return 1


def test_executor_run_config_is_accepted_by_k8s_job_executor() -> None:
    run_config = load("k8s/executor.yaml")
    job = dg.GraphDefinition(name="k8s_steps", node_defs=[_step]).to_job(executor_def=k8s_job_executor)
    dg.validate_run_config(job, run_config)
    gpu_step = run_config["execution"]["config"]["per_step_k8s_config"]["clstm_ppo_policy"]
    assert gpu_step["container_config"]["resources"]["limits"][GPU_RESOURCE] == 1
    with pytest.raises(dg.DagsterInvalidConfigError):
        dg.validate_run_config(job, {"execution": {"config": {"max_concurent": 8}}})


# --- the Helm values (deploy/helm/values.yaml) ---------------------------------------------------------------------

def helm_instance(values: dict[str, Any]) -> dict[str, Any]:
    """The parts of the instance Dagster's chart writes from these values (its templates' key mapping): run queue,
    concurrency and the K8sRunLauncher; storage is deploy/dagster.yaml's, the PostgreSQL the chart points at.
    Dagster refuses run limits set both in the queue's config and under `concurrency`, so both are mapped."""
    concurrency = {section: {snake(k): v for k, v in fields.items()}
                   for section, fields in values["concurrency"].items()}
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    launcher_config = {
        "load_incluster_config": True, "job_namespace": "dagster", "service_account_name": "dagster",
        "instance_config_map": "dagster-instance", "postgres_password_secret": values["global"]["postgresqlSecretName"],
        "image_pull_policy": launcher["imagePullPolicy"], "env_vars": launcher["envVars"],
        "volume_mounts": launcher["volumeMounts"], "volumes": launcher["volumes"],
        "run_k8s_config": {snake(k): v for k, v in launcher["runK8sConfig"].items()},
    }
    queued = (values["dagsterDaemon"]["runCoordinator"].get("config") or {}).get("queuedRunCoordinator") or {}
    run_coordinator = {"module": "dagster.core.run_coordinator", "class": "QueuedRunCoordinator"}
    if queued:
        run_coordinator["config"] = {snake(k): v for k, v in queued.items()}
    return {
        "storage": load("dagster.yaml")["storage"],
        "run_coordinator": run_coordinator,
        "run_launcher": {"module": "dagster_k8s", "class": "K8sRunLauncher", "config": launcher_config},
        "concurrency": concurrency,
    }


def test_helm_values_deploy_this_code_location_with_postgres_the_run_queue_and_the_duckdb_pool(
    tmp_path: Path,
) -> None:
    values = load("helm/values.yaml")
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    args = deployment["dagsterApiGrpcArgs"]
    assert args[args.index("--module-name") + 1] == "pipeline.definitions"
    workspace = yaml.safe_load((REPO_ROOT / "workspace.yaml").read_text())
    assert [entry["python_module"]["module_name"] for entry in workspace["load_from"]] == ["pipeline.definitions"]
    assert values["postgresql"]["enabled"] and values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["dagsterDaemon"]["runCoordinator"]["type"] == "QueuedRunCoordinator"

    config = validated_instance(tmp_path, helm_instance(values))
    assert_accepted(K8sRunLauncher.config_type(), config["run_launcher"]["config"])
    # The cluster holds DuckDB writers to one at a time, exactly as the local and the PostgreSQL instances do.
    local = yaml.safe_load((REPO_ROOT / "dagster_home" / "dagster.yaml").read_text())
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert config["concurrency"]["pools"] == local["concurrency"]["pools"] == load("dagster.yaml")["concurrency"]["pools"]


def password_values(node: Any, path: str = "") -> list[str]:
    """Paths of the values under keys that name a password and hold one (a Secret's name is not a password)."""
    if isinstance(node, dict):
        found = [p for k, v in node.items() for p in password_values(v, f"{path}.{k}")]
        return found + [f"{path}.{k}" for k, v in node.items() if "password" in k.lower() and isinstance(v, str | int)
                        and v != "" and "secret" not in k.lower()]
    if isinstance(node, list):
        return [p for i, v in enumerate(node) for p in password_values(v, f"{path}[{i}]")]
    return []


def test_helm_values_carry_no_password_and_name_the_secret_that_does() -> None:
    values = load("helm/values.yaml")
    assert password_values(values) == []
    assert password_values({"postgresql": {"postgresqlPassword": "change-me"}}) == [".postgresql.postgresqlPassword"]
    # The chart writes no Secret of its own (it would hold a password from these values); the database and
    # Dagster's pods read one Secret made before install.
    assert values["generatePostgresqlPasswordSecret"] is False
    assert values["postgresql"]["existingSecret"] == values["global"]["postgresqlSecretName"]
    assert "--set postgresql.postgresqlPassword" not in (DEPLOY / "README.md").read_text()


def test_helm_values_mount_the_lake_where_the_trainer_pod_does() -> None:
    # Run pods write configs and read models at paths the trainer pod must see at the same place.
    values = load("helm/values.yaml")
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    pod_container = load("k8s/trainer-pod.yaml")["spec"]["containers"][0]
    lake = {e["name"]: e["value"] for e in pod_container["env"]}["PIPELINE_DATA_LAKE"]
    assert {m["mountPath"] for m in pod_container["volumeMounts"]} >= {lake}
    assert {m["mountPath"] for m in deployment["volumeMounts"]} == {lake}
    assert f"PIPELINE_DATA_LAKE={lake}" in values["runLauncher"]["config"]["k8sRunLauncher"]["envVars"]


# --- the Pipes client chosen by the compute resource ---------------------------------------------------------------

def test_subprocess_launcher_is_unchanged() -> None:
    compute = ComputeResource()
    local = dg.PipesSubprocessClient()
    assert compute.launcher == "subprocess"
    assert compute.pipes_client(local) is local
    assert compute.pipes_run_args(CONFIG_PATH) == {
        "command": [sys.executable, "-m", TRAINER_MODULE, CONFIG_PATH]}


def test_k8s_launcher_runs_the_trainer_in_a_gpu_pod_from_the_manifest() -> None:
    compute = ComputeResource(launcher="k8s", device="auto")
    assert isinstance(compute.pipes_client(dg.PipesSubprocessClient()), PipesK8sClient)
    # The pod has the GPU, whatever this machine has.
    assert compute.resolved_device() == "cuda"
    args = compute.pipes_run_args(CONFIG_PATH)
    # The pod exactly as PipesK8sClient.run builds it from these arguments (plus its Pipes variables).
    pod = build_pod_body(pod_name="trainer", image=args["image"], command=args["command"], env_vars={},
                         base_pod_meta=args["base_pod_meta"], base_pod_spec=args["base_pod_spec"])
    (container,) = pod.spec.containers
    assert container.command == ["python", "-m", TRAINER_MODULE, CONFIG_PATH]
    assert container.resources.limits[GPU_RESOURCE] == "1"
    assert pod.spec.node_selector == {"nvidia.com/gpu.present": "true"}
    assert pod.spec.restart_policy == "Never"
    assert container.image == load("k8s/trainer-pod.yaml")["spec"]["containers"][0]["image"]
    assert "/opt/dagster/data_lake" in {m.mount_path for m in container.volume_mounts}


def test_k8s_launcher_asks_one_gpu_per_torchrun_process_and_takes_the_image_override() -> None:
    compute = ComputeResource(launcher="k8s", nproc_per_node=4, k8s_image="registry.local/pipeline:abc123")
    args = compute.pipes_run_args(CONFIG_PATH)
    pod = build_pod_body(pod_name="trainer", image=args["image"], command=args["command"], env_vars={},
                         base_pod_meta=args["base_pod_meta"], base_pod_spec=args["base_pod_spec"])
    (container,) = pod.spec.containers
    assert container.command[:4] == ["python", "-m", "torch.distributed.run", "--standalone"]
    assert "--nproc-per-node=4" in container.command
    assert container.resources.limits[GPU_RESOURCE] == "4"
    assert container.image == "registry.local/pipeline:abc123"


def test_k8s_launcher_says_what_is_wrong_with_a_bad_manifest(tmp_path: Path) -> None:
    deployment = tmp_path / "deployment.yaml"
    deployment.write_text(yaml.safe_dump({"kind": "Deployment", "spec": {"template": {}}}))
    with pytest.raises(ValueError, match="not a Pod manifest"):
        ComputeResource(launcher="k8s", k8s_pod_manifest=str(deployment)).pipes_run_args(CONFIG_PATH)
    with pytest.raises(FileNotFoundError, match="k8s_pod_manifest"):
        ComputeResource(launcher="k8s", k8s_pod_manifest="deploy/k8s/missing.yaml").pipes_run_args(CONFIG_PATH)
