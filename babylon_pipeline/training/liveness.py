"""Which process is training a batch, so that a later run can stop it when the run that started it died.

The trainer records itself in `training-batches/{batch}/trainer.json` as it starts: host, pid, its own
process group, the process's start time (so a recycled pid is never mistaken for it), and in a pod
the pod's name and namespace. `stop_local_trainer` ends such a process group on this host: SIGTERM
(the trainer exits cleanly on it), then SIGKILL after a grace period. Pods are deleted by the
orchestrator's trainer resource. Standard library only: the trainer imports it too.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

TRAINER_RECORD = "trainer.json"
_SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def process_started(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (`/proc/{pid}/stat` field 22); None when it is gone
    or a zombie (dead, not yet reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    fields = stat.rsplit(")", 1)[1].split()  # the name in parentheses may hold spaces
    return None if fields[0] in ("Z", "X") else fields[19]


def trainer_record() -> dict[str, Any]:
    """What identifies this trainer process (no secrets: host name, pid, pod name)."""
    pid = os.getpid()
    record: dict[str, Any] = {"host": socket.gethostname(), "pid": pid, "pgid": os.getpgid(0),
                              "started": process_started(pid)}
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        record["pod"] = socket.gethostname()
        try:
            record["namespace"] = _SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
        except OSError:
            record["namespace"] = None
    return record


def own_process_group() -> None:
    """Lead a process group of our own, so that stopping the trainer stops its helpers and nothing else."""
    try:
        os.setpgid(0, 0)
    except OSError:  # already a group or session leader
        pass


def is_running(record: dict[str, Any]) -> bool:
    pid, started = record.get("pid"), record.get("started")
    return (record.get("host") == socket.gethostname() and isinstance(pid, int) and started is not None
            and process_started(pid) == started)


def stop_local_trainer(record: dict[str, Any], grace_seconds: float = 30.0) -> bool:
    """Stop the recorded trainer if it still runs on this host; True when it had to be stopped."""
    if not is_running(record):
        return False
    pid, pgid = record["pid"], record.get("pgid")
    group = pgid == pid  # the trainer leads its own group: its children go with it, nobody else does

    def send(sig: int) -> None:
        try:
            os.killpg(pid, sig) if group else os.kill(pid, sig)
        except ProcessLookupError:
            pass

    send(signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    while is_running(record) and time.monotonic() < deadline:
        time.sleep(0.1)
    if is_running(record) or group:  # the group: helpers the trainer left behind (its id is not reused meanwhile)
        send(signal.SIGKILL)
        while is_running(record):
            time.sleep(0.05)
    return True


CLAIM = "claim.json"  # models/{version}/claim.json: which batch owns the version (create-if-absent)


class VersionClaimed(RuntimeError):
    """Another batch claimed this version: two trainers never write the same `models/{version}/`."""


def claim_bytes(batch_id: str) -> bytes:
    return json.dumps({"batch_id": batch_id}, sort_keys=True).encode()
