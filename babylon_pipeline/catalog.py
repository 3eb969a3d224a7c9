"""What the asset catalog shows beside each asset: the team that owns it and a link to its code.

Every asset gets the owning team and a code reference (`dagster/code_references`): the file and line
of its definition, so the UI can point at the source. With `BABYLON_GIT_URL` set (the repository's
web address, e.g. `https://github.com/babylon/babylon-pipeline`), the reference becomes a link into
that repository at `BABYLON_GIT_REF` (a commit or branch, default `main`; the production image sets
the commit it was built from). Without it the reference stays a local path: a checkout with no remote
has nothing to link to.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import dagster as dg

OWNER = "team:ml-platform"
GIT_URL_ENV = "BABYLON_GIT_URL"
GIT_REF_ENV = "BABYLON_GIT_REF"
# This file's place in the repository: every other local path is found relative to it.
_ANCHOR_IN_REPOSITORY = "babylon_pipeline/catalog.py"


def _owned(spec: dg.AssetSpec) -> dg.AssetSpec:
    return spec if OWNER in spec.owners else spec.replace_attributes(owners=[*spec.owners, OWNER])


def with_catalog_metadata(assets: Sequence[dg.AssetsDefinition], environ: Mapping[str, str]
                          ) -> list[dg.AssetsDefinition]:
    """The assets with their owner and code references (git links when `BABYLON_GIT_URL` is set)."""
    referenced = dg.with_source_code_references([a.map_asset_specs(_owned) for a in assets])
    git_url = environ.get(GIT_URL_ENV)
    if not git_url:
        return list(referenced)
    return list(dg.link_code_references_to_git(
        referenced, git_url=git_url.rstrip("/"), git_branch=environ.get(GIT_REF_ENV) or "main",
        file_path_mapping=dg.AnchorBasedFilePathMapping(local_file_anchor=Path(__file__),
                                                        file_anchor_path_in_repository=_ANCHOR_IN_REPOSITORY),
    ))
