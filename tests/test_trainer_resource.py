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
