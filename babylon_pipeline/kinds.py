"""Kind badges that say which stores the profile in use really has.

Assets name the abstraction (`trajectory-store`, `object-store`); `build_definitions` replaces it by
what the environment configures when the code location loads: `sqlite` or `postgres` for the
database, `local-files` or `s3` for the object store. Only scheme names are read, never a URL's
credentials, and nothing is connected to.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit

import dagster as dg

from babylon_pipeline.profile import babylon_home, database_url

TRAJECTORY_STORE = "trajectory-store"
OBJECT_STORE = "object-store"
_STORAGE_KINDS = {"file": "local-files", "s3": "s3"}


def database_kind(url: str) -> str:
    """`postgresql+psycopg2://…` → postgres, `sqlite:///…` → sqlite; another dialect keeps its name."""
    dialect = url.split(":", 1)[0].split("+", 1)[0].lower()
    return "postgres" if dialect in ("postgresql", "postgres") else dialect


def storage_kind(url: str) -> str:
    scheme = urlsplit(url).scheme.lower()
    return _STORAGE_KINDS.get(scheme, scheme or OBJECT_STORE)


def profile_kinds() -> dict[str, str]:
    """The abstract kinds → the stores the environment configures now (as the resources pick them)."""
    storage = os.environ.get("BABYLON_STORAGE_URL") or (babylon_home() / "objects").as_uri()
    return {TRAJECTORY_STORE: database_kind(database_url()), OBJECT_STORE: storage_kind(storage)}


def with_profile_kinds(assets: Sequence[dg.AssetsDefinition], kinds: Mapping[str, str]) -> list[dg.AssetsDefinition]:
    """Each asset with its abstract kinds replaced; an asset without any is returned as it is."""
    def concrete(spec: dg.AssetSpec) -> dg.AssetSpec:
        return spec.replace_attributes(kinds={kinds.get(kind, kind) for kind in spec.kinds})

    return [a.map_asset_specs(concrete) if any(k in kinds for s in a.specs for k in s.kinds) else a for a in assets]
