"""Where the GRPO trainer runs: a local subprocess (embedded profile, tests) or a GPU pod (production).

Both start the same command, `python -m babylon_pipeline.training`, through Dagster Pipes, so its
per-step logs stream into the run and its final report lands as the asset's metadata. The trainer
gets its work only through Pipes extras (ids, keys, settings); credentials reach it through its
environment, never through extras, logs or metadata. That environment is an allow-list
(`trainer_env_names`): the subprocess starts through `env -u` for every other variable (names
only on its command line, never values), so it never sees `DATABASE_URL`, `DAGSTER_PG_PASSWORD`,
the judge's key or any other secret of the orchestrator; AWS variables only when the run's
storage is S3. The pod gets the forwarded settings and the one Secret named for it (`envFrom`),
which should hold only what the trainer needs (W&B, hub and object-store credentials).

`stop_trainer` stops a trainer whose run died (found by `windowing.recovery` from the record the
trainer stored): the subprocess's process group on this host, or the pod.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping
from typing import Any, Literal

import dagster as dg

from babylon_pipeline.training.liveness import stop_local_trainer

TRAINER_MODULE = "babylon_pipeline.training"
TRAINER_COMMAND = ["python", "-m", TRAINER_MODULE]
# Settings the trainer needs to reach the object store and W&B; values are not secret.
FORWARDED_ENV = ("BABYLON_STORAGE_URL", "AWS_ENDPOINT_URL", "AWS_REGION", "AWS_DEFAULT_REGION", "WANDB_PROJECT",
                 "WANDB_MODE", "WANDB_ENTITY")


def gpu_pod_spec(image: str, gpus: int, secret_name: str | None, memory: str, service_account: str | None = None,
                 node_selector: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The trainer pod: GPUs as an extended resource, tolerating GPU taints, never restarted.

    Requesting `nvidia.com/gpu` already keeps it off nodes without GPUs; `node_selector` picks among
    GPU nodes (a GPU model, a node pool)."""
    if gpus < 1:
        raise ValueError(f"a training pod needs at least one GPU, got {gpus}")
    container: dict[str, Any] = {
        "name": "trainer",
        "image": image,
        "command": TRAINER_COMMAND,
        "resources": {
            "limits": {"nvidia.com/gpu": str(gpus), "memory": memory},
            "requests": {"nvidia.com/gpu": str(gpus), "memory": memory},
        },
        "env": [{"name": "PYTHONUNBUFFERED", "value": "1"}],
    }
    if secret_name:
        container["envFrom"] = [{"secretRef": {"name": secret_name}}]
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [container],
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    }
    if service_account:
        spec["serviceAccountName"] = service_account
    if node_selector:
        spec["nodeSelector"] = dict(node_selector)
    return spec


def parse_node_selector(text: str) -> dict[str, str]:
    """`key=value,key2=value2` (BABYLON_TRAINER_NODE_SELECTOR) as a node selector."""
    pairs = [item.strip() for item in text.split(",") if item.strip()]
    if any("=" not in pair or not pair.split("=", 1)[0].strip() for pair in pairs):
        raise ValueError(f"a node selector is key=value pairs separated by commas, got {text!r}")
    return {key.strip(): value.strip() for key, value in (pair.split("=", 1) for pair in pairs)}


# What the trainer's process needs from the orchestrator's environment, and nothing else.
TRAINER_ENV = frozenset({
    "PATH", "HOME", "USER", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "PYTHONPATH", "PYTHONUNBUFFERED",
    "PYTHONHASHSEED", "VIRTUAL_ENV", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "TOKENIZERS_PARALLELISM",
    "BABYLON_TRAINER_WORK_DIR",
})
TRAINER_ENV_PREFIXES = ("DAGSTER_PIPES_", "WANDB_", "HF_", "TRANSFORMERS_", "CUDA_", "NVIDIA_", "PYTORCH_", "OMP_",
                        "MKL_")
S3_ENV_PREFIX = "AWS_"  # credentials and endpoint for an s3:// store; not passed when storage is local


def trainer_env_names(environ: Mapping[str, str], storage_url: str) -> set[str]:
    """The names of `environ` the trainer may see."""
    prefixes = TRAINER_ENV_PREFIXES + ((S3_ENV_PREFIX,) if storage_url.startswith("s3://") else ())
    return {name for name in environ if name in TRAINER_ENV or name.startswith(prefixes)}


def trainer_command(environ: Mapping[str, str], storage_url: str, command: list[str]) -> list[str]:
    """`command` started through `env -u NAME…` for every variable not on the allow-list."""
    hidden = sorted(set(environ) - trainer_env_names(environ, storage_url))
    env = shutil.which("env") or "/usr/bin/env"
    return [env, *(arg for name in hidden for arg in ("-u", name)), *command]


class TrainerResource(dg.ConfigurableResource):
    """`backend="subprocess"` runs the trainer beside the orchestrator; `"k8s"` in a GPU pod of `image`."""

    backend: Literal["subprocess", "k8s"] = "subprocess"
    image: str | None = None
    namespace: str = "default"
    gpus: int = 1
    memory: str = "32Gi"
    secret_name: str | None = "babylon-trainer"
    service_account: str | None = None
    node_selector: dict[str, str] | None = None

    def forwarded_env(self) -> dict[str, str]:
        return {name: os.environ[name] for name in FORWARDED_ENV if os.environ.get(name)}

    def pod_spec(self) -> dict[str, Any]:
        if not self.image:
            raise ValueError("the k8s trainer needs an image: set BABYLON_TRAINER_IMAGE")
        return gpu_pod_spec(self.image, self.gpus, self.secret_name, self.memory, self.service_account,
                            self.node_selector)

    def run(self, context: dg.AssetExecutionContext, extras: Mapping[str, Any]) -> dg.PipesClientCompletedInvocation:
        try:
            return self._start(context, extras)
        except Exception as error:
            raise TrainerFailed(reported_exception(context) or f"{type(error).__name__}: {error}") from error

    def _start(self, context: dg.AssetExecutionContext, extras: Mapping[str, Any]) -> dg.PipesClientCompletedInvocation:
        if self.backend == "k8s":
            from dagster_k8s import PipesK8sClient  # production only: the embedded profile never needs kubernetes

            return PipesK8sClient(poll_interval=5.0).run(
                context=context, extras=extras, namespace=self.namespace, env=self.forwarded_env(),
                base_pod_spec=self.pod_spec(),
            )
        return dg.PipesSubprocessClient(forward_termination=True).run(
            context=context, extras=extras,
            command=self.subprocess_command(extras, [sys.executable, "-m", TRAINER_MODULE]),
        )

    def subprocess_command(self, extras: Mapping[str, Any], command: list[str]) -> list[str]:
        return trainer_command(os.environ, str(extras.get("storage_url", "")), command)

    def stop_trainer(self, record: Mapping[str, Any]) -> bool:
        """Stop a trainer whose run died, from the record it stored; True when one was still running."""
        if record.get("pod"):
            return self._delete_pod(str(record["pod"]), str(record.get("namespace") or self.namespace))
        return stop_local_trainer(dict(record))

    def _delete_pod(self, name: str, namespace: str) -> bool:
        from kubernetes import client, config  # production only, with dagster-k8s
        from kubernetes.client.rest import ApiException

        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
        try:
            client.CoreV1Api().delete_namespaced_pod(name, namespace, grace_period_seconds=30)
        except ApiException as error:
            if error.status == 404:
                return False
            raise
        return True


class TrainerFailed(RuntimeError):
    """The trainer did not finish: its own exception when it reported one through Pipes, else how it ended."""


PIPES_CLOSED_WITH_EXCEPTION = "[pipes] external process pipes closed with exception"


def reported_exception(context: dg.AssetExecutionContext) -> str | None:
    """The exception the trainer reported when it closed Pipes (Dagster logs it as an engine event)."""
    entries = context.instance.all_logs(context.run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)
    for entry in reversed(entries):
        event = entry.dagster_event
        if entry.user_message == PIPES_CLOSED_WITH_EXCEPTION and event and event.engine_event_data.error:
            error = event.engine_event_data.error
            return f"{error.cls_name}: {error.message.strip()}"
    return None


def trainer_resource_from_env() -> TrainerResource:
    """`BABYLON_TRAINER=k8s` (with `BABYLON_TRAINER_IMAGE`, ...) in production; a subprocess otherwise."""
    if os.environ.get("BABYLON_TRAINER", "subprocess") != "k8s":
        return TrainerResource()
    return TrainerResource(
        backend="k8s",
        image=dg.EnvVar("BABYLON_TRAINER_IMAGE"),
        namespace=os.environ.get("BABYLON_TRAINER_NAMESPACE", "default"),
        gpus=int(os.environ.get("BABYLON_TRAINER_GPUS", "1")),
        memory=os.environ.get("BABYLON_TRAINER_MEMORY", "32Gi"),
        secret_name=os.environ.get("BABYLON_TRAINER_SECRET", "babylon-trainer"),
        service_account=os.environ.get("BABYLON_TRAINER_SERVICE_ACCOUNT"),
        node_selector=parse_node_selector(os.environ.get("BABYLON_TRAINER_NODE_SELECTOR", "")) or None,
    )
