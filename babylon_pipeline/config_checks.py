"""Checks for the values people type into the Launchpad, as pydantic field validators of the `dg.Config` classes.

Dagster builds a config object (running these) when the step that takes it starts, before its body runs:
a bad value fails that step with the rule's own message, having changed nothing. Enumerations are typed as
`Literal` instead, which Dagster's own config schema refuses before a run is even created. Each check reuses
the rule of the module that owns it (a fraction: `serving.state`; a version: `store.registry`), so the
Launchpad and the code behind it never disagree.
"""

from __future__ import annotations

import math

from babylon_pipeline.serving.state import check_fraction
from babylon_pipeline.store.registry import parse_version


def share_of_agents(value: float) -> float:
    check_fraction(value)  # "a canary fraction is a share of agents in (0, 1], not …"
    return value


def not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must say why (it is kept in the deployment history), not be empty")
    return value


def version_or_none(value: str | None) -> str | None:
    if value is not None and parse_version(value) is None:
        raise ValueError(f"{value!r} is not a model version: want vMAJOR.MINOR.PATCH, e.g. v1.2.0")
    return value


def share(value: float) -> float:
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ValueError(f"must be a share in [0, 1], not {value!r}")
    return value
