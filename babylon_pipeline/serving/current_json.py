"""`deployments/current.json`: the deployment for inference clients that have no database access.

Written after each committed change, from the state that change returned. Two changes committed close
together may write in either order, so a write never replaces a newer state (`changed_at`): it reads the
object, compares, and replaces it only if nobody changed it since (`put_if_unchanged`). Readers route with
`serving.routing.route` on what `read_current_json` returns, exactly as the database readers do.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from babylon_pipeline.serving.state import Deployment
from babylon_pipeline.storage import ObjectNotFound, ObjectStore
from babylon_pipeline.store.registry import model_id_of

CURRENT_KEY = "deployments/current.json"
FORMAT = 1
_ATTEMPTS = 20


def deployment_json(deployment: Deployment) -> dict[str, Any]:
    """The object's content; times are naive UTC in ISO 8601, model ids are the adapters' served names."""
    return {
        "format": FORMAT,
        "in_service": deployment.in_service,
        "in_service_model": model_id_of(deployment.in_service) if deployment.in_service else None,
        "canary": deployment.canary,
        "canary_model": model_id_of(deployment.canary) if deployment.canary else None,
        "canary_fraction": deployment.canary_fraction,
        "stage": deployment.stage,
        "salt": deployment.salt,
        "canary_started_at": _iso(deployment.canary_started_at),
        "changed_at": _iso(deployment.changed_at),
    }


def deployment_from_json(value: dict[str, Any]) -> Deployment:
    if value.get("format") != FORMAT:
        raise ValueError(f"{CURRENT_KEY}: unknown format {value.get('format')!r} (want {FORMAT})")
    return Deployment(value["in_service"], value["canary"], float(value["canary_fraction"]), int(value["stage"]),
                      value["salt"], _moment(value["canary_started_at"]), _moment(value["changed_at"]))


def write_current_json(store: ObjectStore, deployment: Deployment) -> bool:
    """Publish `deployment` unless the object already holds a newer one; True when it was written."""
    data = json.dumps(deployment_json(deployment), indent=1, sort_keys=True).encode("utf-8")
    for _ in range(_ATTEMPTS):
        try:
            old, version = store.get_versioned(CURRENT_KEY)
        except ObjectNotFound:
            old, version = None, None
        if old is not None and _newer(json.loads(old), deployment):
            return False
        if store.put_if_unchanged(CURRENT_KEY, data, version):
            return True
    raise RuntimeError(f"{CURRENT_KEY} kept changing under {_ATTEMPTS} attempts to write it")


def read_current_json(store: ObjectStore) -> Deployment | None:
    """The published deployment; None before the first change was published (the base serves)."""
    try:
        return deployment_from_json(store.get_json(CURRENT_KEY))
    except ObjectNotFound:
        return None


def _newer(stored: dict[str, Any], deployment: Deployment) -> bool:
    stored_at = _moment(stored.get("changed_at"))
    return stored_at is not None and (deployment.changed_at is None or stored_at > deployment.changed_at)


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _moment(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)
