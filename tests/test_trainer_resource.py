"""The production trainer pod, built exactly as PipesK8sClient builds it, without a cluster."""

from __future__ import annotations

import pytest
from dagster_k8s.pipes import build_pod_body

from babylon_pipeline.resources.trainer import TRAINER_COMMAND, TrainerResource, trainer_resource_from_env

SECRET = "aws-secret-value-never-in-a-pod-spec"


def _pod(resource: TrainerResource, env: dict[str, str]):
    return build_pod_body("babylon-trainer-run-1", None, None, env, None, resource.pod_spec())


def test_gpu_pod_runs_the_trainer_command_with_credentials_from_a_secret(monkeypatch) -> None:
    monkeypatch.setenv("BABYLON_STORAGE_URL", "s3://babylon-models/prod")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "https://s3.example.internal")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("WANDB_API_KEY", SECRET)
    resource = TrainerResource(backend="k8s", image="ghcr.io/babylon/trainer:1.2", gpus=2, secret_name="trainer-creds")
    pod = _pod(resource, resource.forwarded_env())

    container = pod.spec.containers[0]
    assert container.image == "ghcr.io/babylon/trainer:1.2"
    assert container.command == TRAINER_COMMAND
    assert container.resources.limits["nvidia.com/gpu"] == "2" and container.resources.requests["nvidia.com/gpu"] == "2"
    assert container.env_from[0].secret_ref.name == "trainer-creds"
    assert pod.spec.restart_policy == "Never"
    assert any(t.key == "nvidia.com/gpu" for t in pod.spec.tolerations)
    env = {e.name: e.value for e in container.env}
    assert env["BABYLON_STORAGE_URL"] == "s3://babylon-models/prod" and env["AWS_ENDPOINT_URL"].startswith("https://")
    assert SECRET not in str(pod.to_dict())


def test_k8s_settings_come_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("BABYLON_TRAINER", "k8s")
    monkeypatch.setenv("BABYLON_TRAINER_IMAGE", "trainer:7")
    monkeypatch.setenv("BABYLON_TRAINER_GPUS", "4")
    monkeypatch.setenv("BABYLON_TRAINER_NAMESPACE", "ml")
    resource = trainer_resource_from_env()
    with resource.process_config_and_initialize_cm() as live:
        assert (live.backend, live.image, live.gpus, live.namespace) == ("k8s", "trainer:7", 4, "ml")
        assert _pod(live, {}).spec.containers[0].resources.limits["nvidia.com/gpu"] == "4"


def test_embedded_profile_trains_in_a_subprocess(monkeypatch) -> None:
    monkeypatch.delenv("BABYLON_TRAINER", raising=False)
    assert trainer_resource_from_env().backend == "subprocess"


@pytest.mark.parametrize(("resource", "message"), [
    (TrainerResource(backend="k8s"), "needs an image"),
    (TrainerResource(backend="k8s", image="t:1", gpus=0), "at least one GPU"),
])
def test_bad_pod_settings_are_clear_errors(resource: TrainerResource, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        resource.pod_spec()


PRINT_ENV = ["-c", "import json, os; print(json.dumps(sorted(os.environ)))"]
ORCHESTRATOR_ENV = {
    "PATH": "/usr/bin:/bin", "HOME": "/home/babylon", "DATABASE_URL": "postgresql://u:pw@db/babylon",
    "DAGSTER_PG_PASSWORD": "pw", "BABYLON_JUDGE_API_KEY": "sk-judge", "OPENAI_API_KEY": "sk-openai",
    "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_ACCESS_KEY_ID": "AKIA", "WANDB_API_KEY": "wandb-key",
    "HF_TOKEN": "hf-token", "BABYLON_TRAINER_WORK_DIR": "/scratch", "DAGSTER_PIPES_CONTEXT": "ctx",
}


@pytest.mark.parametrize(("storage_url", "aws"), [("file:///data/objects", False), ("s3://babylon/prod", True)])
def test_the_subprocess_trainer_sees_only_the_allowed_environment(monkeypatch, storage_url, aws) -> None:
    """Started for real: the child lists the variable names it got (the command line carries names, never values)."""
    import json
    import subprocess
    import sys

    for name in list(__import__("os").environ):
        monkeypatch.delenv(name)
    for name, value in ORCHESTRATOR_ENV.items():
        monkeypatch.setenv(name, value)
    command = TrainerResource().subprocess_command({"storage_url": storage_url}, [sys.executable, *PRINT_ENV])
    secrets = [value for value in ORCHESTRATOR_ENV.values() if len(value) > 4 and "/" not in value]
    assert not any(value in " ".join(command) for value in secrets)
    seen = set(json.loads(subprocess.run(command, capture_output=True, text=True, check=True,
                                         env=ORCHESTRATOR_ENV).stdout))
    expected = {"PATH", "HOME", "WANDB_API_KEY", "HF_TOKEN", "BABYLON_TRAINER_WORK_DIR", "DAGSTER_PIPES_CONTEXT"}
    expected |= {"AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID"} if aws else set()
    assert seen - {"LC_CTYPE", "PWD", "SHLVL", "_"} == expected


def test_a_node_selector_picks_among_gpu_nodes(monkeypatch) -> None:
    monkeypatch.setenv("BABYLON_TRAINER", "k8s")
    monkeypatch.setenv("BABYLON_TRAINER_IMAGE", "trainer:7")
    monkeypatch.setenv("BABYLON_TRAINER_NODE_SELECTOR", " cloud.google.com/gke-accelerator=nvidia-l4, pool=train ")
    with trainer_resource_from_env().process_config_and_initialize_cm() as live:
        assert _pod(live, {}).spec.node_selector == {"cloud.google.com/gke-accelerator": "nvidia-l4", "pool": "train"}
    monkeypatch.setenv("BABYLON_TRAINER_NODE_SELECTOR", "pool")
    with pytest.raises(ValueError, match="key=value"):
        trainer_resource_from_env()
    monkeypatch.delenv("BABYLON_TRAINER_NODE_SELECTOR")
    with trainer_resource_from_env().process_config_and_initialize_cm() as live:
        assert _pod(live, {}).spec.node_selector is None
