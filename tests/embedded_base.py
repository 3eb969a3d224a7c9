"""The embedded base exactly as the default `base_model` config builds it: once per test session, shared."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from babylon_pipeline.assets.base_model import base_model
from babylon_pipeline.resources.object_store import ObjectStoreResource
from tests.training_data import shared_build


def materialize_base(store_url: str, **config) -> dg.ExecuteInProcessResult:
    return dg.materialize([base_model], resources={"object_store": ObjectStoreResource(url=store_url)},
                          run_config={"ops": {"base_model": {"config": config}}}, raise_on_error=False)


def embedded_base_objects(tmp_path_factory) -> Path:
    """An object-store folder holding `models/base/` (a few CPU minutes the first time in a session)."""

    def build(folder: Path) -> None:
        result = materialize_base(folder.as_uri())
        assert result.success

    return shared_build(tmp_path_factory, "embedded-base", build)
