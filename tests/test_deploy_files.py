"""deploy/: what can be checked without a cluster or a registry.

The Helm values' instance settings are rendered the way the dagster chart's templates render them and
validated by Dagster's own instance schema and the configured classes' schemas; the run queue's limits
are the ones of dagster.yaml and `babylon_pipeline.instance`; the trainer pod the values configure and
the vLLM manifest deserialize into Kubernetes client models; the values and the vLLM manifest agree
(base model, server address, adapter folder, object store); the Dockerfile's pins are pyproject.toml's.
The image itself is not built here (no base images without the internet).
"""

from __future__ import annotations

import importlib
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from dagster._config import process_config
from dagster._core.instance.config import dagster_instance_config
from dagster_k8s.models import k8s_model_from_dict, k8s_snake_case_dict
from kubernetes import client
from packaging.specifiers import SpecifierSet

from babylon_pipeline import instance as embedded
from babylon_pipeline.assets.lora_checkpoint import TrainingConfig
from babylon_pipeline.resources.trainer import TRAINER_COMMAND, parse_node_selector, trainer_resource_from_env
from babylon_pipeline.storage.keys import MODELS

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
VALUES: dict[str, Any] = yaml.safe_load((DEPLOY / "helm" / "values.yaml").read_text())
VLLM: list[dict[str, Any]] = [doc for doc in yaml.safe_load_all((DEPLOY / "vllm.yaml").read_text()) if doc]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
# Names of variables that hold secrets (BABYLON_TRAINER_SECRET names a Kubernetes Secret: not one itself).
SECRET_NAME = re.compile(r"KEY|TOKEN|PASSWORD|PASSWD|CREDENTIAL|^DATABASE_URL$|WEBHOOK", re.IGNORECASE)


def _code_location() -> dict[str, Any]:
    (deployment,) = VALUES["dagster-user-deployments"]["deployments"]
    return deployment


def _env(container_env: list[dict[str, Any]]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container_env if "value" in item}


def _k8s(model_class: type, manifest: Mapping[str, Any]) -> Any:
    """The manifest as a kubernetes client model: unknown or misspelt keys and wrong shapes fail."""
    return k8s_model_from_dict(model_class, k8s_snake_case_dict(model_class, manifest))


def _pins(requirements: list[str]) -> dict[str, str]:
    pins = {}
    for requirement in requirements:
        name, _, version = requirement.partition("==")
        pins[re.sub(r"\[.*\]", "", name).strip().lower()] = version.strip()
    return pins


PINS = _pins(PYPROJECT["project"]["dependencies"] + PYPROJECT["project"]["optional-dependencies"]["train"])


# --- the instance the chart writes from the values --------------------------------------------------------------


def _chart_instance(values: Mapping[str, Any]) -> dict[str, Any]:
    """The dagster.yaml the chart (1.13) renders from these values, for the keys this project sets.

    Mirrors the chart's templates: `configmap-instance.yaml` and its helpers for Postgres storage,
    the K8s run launcher, the queued run coordinator, `concurrency` (camelCase → snake_case), the S3
    compute log manager and telemetry."""
    pg = values["postgresql"]
    postgres = {"postgres_db": {
        "username": pg["postgresqlUsername"], "password": {"env": "DAGSTER_PG_PASSWORD"},
        "hostname": pg["postgresqlHost"], "db_name": pg["postgresqlDatabase"], "port": pg["service"]["port"],
        "params": pg.get("postgresqlParams", {}),
        **({"scheme": pg["postgresqlScheme"]} if "postgresqlScheme" in pg else {}),
    }}
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    logs = values["computeLogManager"]["config"]["s3ComputeLogManager"]
    concurrency = values["concurrency"]
    rendered: dict[str, Any] = {
        "run_storage": {"module": "dagster_postgres.run_storage", "class": "PostgresRunStorage", "config": postgres},
        "event_log_storage": {"module": "dagster_postgres.event_log", "class": "PostgresEventLogStorage",
                              "config": postgres},
        "schedule_storage": {"module": "dagster_postgres.schedule_storage", "class": "PostgresScheduleStorage",
                             "config": postgres},
        "run_launcher": {"module": "dagster_k8s", "class": values["runLauncher"]["type"], "config": {
            "load_incluster_config": launcher["loadInclusterConfig"], "job_namespace": launcher["jobNamespace"],
            "image_pull_policy": launcher["imagePullPolicy"], "service_account_name": "babylon-dagster",
            "dagster_home": "/opt/dagster/dagster_home", "instance_config_map": "babylon-dagster-instance",
            "postgres_password_secret": values["global"]["postgresqlSecretName"],
            "env_config_maps": launcher["envConfigMaps"], "env_secrets": launcher["envSecrets"],
            "env_vars": launcher["envVars"], "volume_mounts": launcher["volumeMounts"], "volumes": launcher["volumes"],
            "fail_pod_on_run_failure": launcher["failPodOnRunFailure"],
        }},
        "compute_logs": {"module": "dagster_aws.s3.compute_log_manager", "class": values["computeLogManager"]["type"],
                         "config": {"bucket": logs["bucket"], "prefix": logs["prefix"],
                                    "endpoint_url": logs["endpointUrl"], "region": logs["region"],
                                    "upload_interval": logs["uploadInterval"]}},
        "telemetry": {"enabled": values["telemetry"]["enabled"]},
    }
    coordinator = values["dagsterDaemon"]["runCoordinator"]
    if values["dagsterDaemon"]["enabled"] and coordinator["enabled"]:
        # (older chart templates wrote the module as `dagster.core.run_coordinator`, which 1.13 cannot import)
        rendered["run_coordinator"] = {"module": "dagster._core.run_coordinator", "class": coordinator["type"]}
    if concurrency["enabled"]:
        rendered["concurrency"] = {
            "pools": {"default_limit": concurrency["pools"]["defaultLimit"]},
            "runs": {"tag_concurrency_limits": concurrency["runs"]["tagConcurrencyLimits"]},
        }
    return rendered


def _configured_class(entry: Mapping[str, Any]) -> type:
    return getattr(importlib.import_module(entry["module"]), entry["class"])


def test_the_instance_the_values_configure_passes_dagsters_schemas(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", "not-a-real-password")
    rendered = _chart_instance(VALUES)
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(rendered))
    config, custom_class = dagster_instance_config(str(tmp_path))  # the instance schema, concurrency rules included
    assert custom_class is None
    for key in ("run_storage", "event_log_storage", "schedule_storage", "run_launcher", "compute_logs",
                "run_coordinator"):
        klass = _configured_class(config[key])
        result = process_config(klass.config_type(), config[key].get("config") or {})  # the class's own schema
        assert result.success, (key, [error.message for error in result.errors])
    assert config["run_launcher"]["class"] == "K8sRunLauncher"
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert config["run_storage"]["config"]["postgres_db"]["scheme"] == "postgresql+psycopg2"

    bad = {**rendered, "concurrency": {**rendered["concurrency"], "pools": {"default_limit": -1}}}
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(Exception, match="default_limit"):  # the check can fail
        dagster_instance_config(str(tmp_path))


def test_the_run_queue_limits_are_the_repositorys(monkeypatch) -> None:
    for part in ("HOST", "PORT", "USER", "PASSWORD", "DB"):
        monkeypatch.setenv(f"DAGSTER_PG_{part}", "5432" if part == "PORT" else "x")
    production, _ = dagster_instance_config(str(REPO))  # the repository's dagster.yaml passes the schema too
    rendered = _chart_instance(VALUES)["concurrency"]
    assert rendered == production["concurrency"] == embedded.CONCURRENCY
    limits = {limit["key"]: limit for limit in rendered["runs"]["tag_concurrency_limits"]}
    assert limits[embedded.GPU_RUN_TAG_KEY] == {"key": "babylon/gpu", "value": "true", "limit": 1}
    assert limits[embedded.PARTITION_TAG_KEY]["value"] == {"applyLimitPerUniqueValue": True}
    # the chart refuses limits in both places; ours live in `concurrency` only
    assert not VALUES["dagsterDaemon"]["runCoordinator"].get("config", {}).get("queuedRunCoordinator", {}).get(
        "tagConcurrencyLimits")


# --- the values themselves --------------------------------------------------------------------------------------


def test_the_values_describe_the_production_layout() -> None:
    assert VALUES["postgresql"]["enabled"] is False and VALUES["postgresql"]["postgresqlHost"]
    assert VALUES["generatePostgresqlPasswordSecret"] is False and VALUES["global"]["postgresqlSecretName"]
    assert VALUES["runLauncher"]["type"] == "K8sRunLauncher"
    assert VALUES["dagsterDaemon"]["enabled"] is True
    assert VALUES["dagsterWebserver"]["enableReadOnly"] is True
    assert VALUES["dagsterWebserver"]["service"]["type"] == "ClusterIP"  # only through the authenticating proxy
    deployment = _code_location()
    target = PYPROJECT["tool"]["dg"]["project"]["code_location_target_module"]
    assert deployment["codeServerArgs"] == ["-m", target]
    assert deployment["includeConfigInLaunchedRuns"]["enabled"] is True
    secrets = {secret["name"] for secret in deployment["envSecrets"]}
    assert secrets == {"babylon-database", "babylon-s3", "babylon-judge", "babylon-inference", "babylon-alerts"}
    assert deployment["podSecurityContext"]["runAsNonRoot"] is True


def test_the_values_hold_no_secret_and_only_variables_the_project_reads() -> None:
    env = _code_location()["env"]
    assert all(set(item) == {"name", "value"} for item in env)
    names = [item["name"] for item in env]
    assert len(names) == len(set(names))
    assert not [name for name in names if SECRET_NAME.search(name)], "secrets belong in envSecrets"
    known = (REPO / "README.md").read_text() + "".join(p.read_text() for p in (REPO / "babylon_pipeline").rglob("*.py"))
    assert not [name for name in names if name not in known], "a variable nothing reads (a typo?)"


def test_the_trainer_pod_the_values_configure_is_a_valid_gpu_pod(monkeypatch) -> None:
    env = _env(_code_location()["env"])
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with trainer_resource_from_env().process_config_and_initialize_cm() as trainer:
        spec = _k8s(client.V1PodSpec, trainer.pod_spec())
    (container,) = spec.containers
    image = _code_location()["image"]
    assert container.image == env["BABYLON_TRAINER_IMAGE"] == f"{image['repository']}:{image['tag']}"  # one commit
    assert container.command == TRAINER_COMMAND
    assert container.resources.limits["nvidia.com/gpu"] == env["BABYLON_TRAINER_GPUS"]
    assert container.resources.limits["memory"] == env["BABYLON_TRAINER_MEMORY"]
    assert container.env_from[0].secret_ref.name == env["BABYLON_TRAINER_SECRET"]
    assert spec.node_selector == parse_node_selector(env["BABYLON_TRAINER_NODE_SELECTOR"]) != {}
    assert any(t.key == "nvidia.com/gpu" and t.effect == "NoSchedule" for t in spec.tolerations)
    assert env["BABYLON_TRAINER_NAMESPACE"] == VALUES["runLauncher"]["config"]["k8sRunLauncher"]["jobNamespace"]


def test_a_misspelt_manifest_does_not_deserialize() -> None:
    with pytest.raises(Exception, match="Unexpected keys"):
        _k8s(client.V1PodSpec, {"containers": [{"name": "x", "image": "y", "resource": {}}]})


# --- vLLM -------------------------------------------------------------------------------------------------------


def _vllm() -> tuple[client.V1Deployment, client.V1Service]:
    (deployment,) = [doc for doc in VLLM if doc["kind"] == "Deployment"]
    (service,) = [doc for doc in VLLM if doc["kind"] == "Service"]
    return _k8s(client.V1Deployment, deployment), _k8s(client.V1Service, service)


def _flag(args: list[str], name: str) -> str:
    (value,) = [arg.split("=", 1)[1] for arg in args if arg.startswith(f"{name}=")]
    return value


def test_vllm_serves_the_base_with_runtime_lora_loading_on_a_gpu() -> None:
    deployment, service = _vllm()
    pod = deployment.spec.template.spec
    vllm = next(c for c in pod.containers if c.name == "vllm")
    assert "--enable-lora" in vllm.args
    assert _env([e.to_dict() for e in vllm.env])["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    assert int(_flag(vllm.args, "--max-loras")) >= 2  # the version in service and a canary
    rank = int(_flag(vllm.args, "--max-lora-rank"))
    assert rank in (1, 8, 16, 32, 64, 128, 256, 320, 512) and rank >= TrainingConfig().lora_r
    assert vllm.resources.limits["nvidia.com/gpu"] == "1" and vllm.resources.requests["nvidia.com/gpu"] == "1"
    assert vllm.readiness_probe.http_get.path == "/health" and vllm.startup_probe is not None
    key = next(e for e in vllm.env if e.name == "VLLM_API_KEY").value_from.secret_key_ref
    assert (key.name, key.key) == ("babylon-inference", "BABYLON_INFERENCE_API_KEY")
    assert service.spec.type == "ClusterIP"
    assert service.spec.selector.items() <= deployment.spec.template.metadata.labels.items()


def test_the_values_point_at_the_vllm_server_and_its_adapter_folder() -> None:
    deployment, service = _vllm()
    env = _env(_code_location()["env"])
    pod = deployment.spec.template.spec
    vllm = next(c for c in pod.containers if c.name == "vllm")
    sync = next(c for c in pod.containers if c.name == "adapter-sync")
    assert vllm.args[0] == env["BASE_MODEL"]  # adapters fit only the base they were trained on

    url = urlsplit(env["BABYLON_INFERENCE_BASE_URL"])
    assert url.hostname == f"{service.metadata.name}.{service.metadata.namespace}.svc.cluster.local"
    assert url.port == service.spec.ports[0].port and url.path == "/v1"
    assert service.metadata.namespace == deployment.metadata.namespace == env["BABYLON_TRAINER_NAMESPACE"]

    mounts = {c.name: {m.name: m.mount_path for m in c.volume_mounts} for c in (vllm, sync)}
    assert mounts["vllm"]["adapters"] == env["BABYLON_INFERENCE_ADAPTER_ROOT"] == mounts["adapter-sync"]["adapters"]
    sync_env = _env([e.to_dict() for e in sync.env])
    assert sync_env["ADAPTER_SOURCE"] == f"{env['BABYLON_STORAGE_URL'].rstrip('/')}/{MODELS}/"
    assert sync_env["AWS_ENDPOINT_URL"] == env["AWS_ENDPOINT_URL"]
    assert {"babylon-s3"} == {source.secret_ref.name for source in sync.env_from}


# --- the Dockerfile ---------------------------------------------------------------------------------------------


def _instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_the_dockerfile_pins_are_pyprojects() -> None:
    instructions = _instructions()
    args = dict(arg.split("=", 1) for kind, arg in instructions if kind == "ARG" and "=" in arg)
    assert args["TORCH_VERSION"] == PINS["torch"]
    assert f"3.{args['PYTHON_VERSION'].split('.')[1]}" in SpecifierSet(PYPROJECT["project"]["requires-python"])
    for name, version in re.findall(r"\b([A-Za-z0-9_.-]+)==([0-9][^\s\"']*)", (DEPLOY / "Dockerfile").read_text()):
        if not version.startswith("$"):
            assert PINS[name.lower()] == version, name
    runs = " ".join(arg for kind, arg in instructions if kind == "RUN")
    assert 'pip install ".[train]"' in runs
    assert '"torch==${TORCH_VERSION}"' in runs and "${TORCH_INDEX_URL}" in runs


def test_the_image_runs_as_a_user_has_no_secret_and_starts_the_code_location() -> None:
    instructions = _instructions()
    kinds = [kind for kind, _ in instructions]
    user = [arg for kind, arg in instructions if kind == "USER"][-1]
    assert user.split(":")[0] not in ("root", "0")
    assert kinds.index("USER") > max(i for i, kind in enumerate(kinds) if kind == "RUN")  # the last word
    env_names = [re.split(r"[= ]", pair)[0] for kind, arg in instructions if kind == "ENV"
                 for pair in re.findall(r"([A-Z_][A-Z0-9_]*=\S+)", arg)]
    assert env_names and not [name for name in env_names if SECRET_NAME.search(name)]
    assert not [kind for kind in kinds if kind in ("ENTRYPOINT", "ADD")]  # args from the chart and launcher as given
    cmd = yaml.safe_load([arg for kind, arg in instructions if kind == "CMD"][-1])
    target = PYPROJECT["tool"]["dg"]["project"]["code_location_target_module"]
    assert cmd[:3] == ["dagster", "code-server", "start"] and cmd[-2:] == ["-m", target]
    assert str(_code_location()["port"]) == cmd[cmd.index("-p") + 1]
    copied = [arg.split()[:-1] for kind, arg in instructions if kind == "COPY"]
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text()
    for path in (p for paths in copied for p in paths):
        assert (REPO / path).exists() and f"!{path}" in ignore, path
