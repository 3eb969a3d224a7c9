"""The embedded profile's Dagster instance: `$BABYLON_HOME/dagster/dagster.yaml`, SQLite storage beside it.

`python -m babylon_pipeline.instance` writes it (when missing or stale) and prints its folder, the
value for `DAGSTER_HOME`. The production instance is the `dagster.yaml` at the repository's top; both
share the run queue and pool limits below.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import yaml

from babylon_pipeline.profile import babylon_home

# Runs tagged {GPU_RUN_TAG_KEY: GPU_RUN_TAG_VALUE} hold the machine's one GPU: at most one in progress.
GPU_RUN_TAG_KEY = "babylon/gpu"
GPU_RUN_TAG_VALUE = "true"
GPU_RUN_TAGS = {GPU_RUN_TAG_KEY: GPU_RUN_TAG_VALUE}
# Assets that train on the GPU also take a slot of this pool (`@dg.asset(pool=GPU_POOL)`).
GPU_POOL = "gpu"

# Dagster tags a run of one partition with its key: one run per window at a time, so a rescore for
# late outcomes waits for the window's run in progress instead of racing it for the window's manifest.
PARTITION_TAG_KEY = "dagster/partition"
# A run of a partition range carries these instead, which no tag limit can match per window:
# the late-outcomes sensor defers a window while such a run covers it.
PARTITION_RANGE_START_TAG_KEY = "dagster/asset_partition_range_start"
PARTITION_RANGE_END_TAG_KEY = "dagster/asset_partition_range_end"
# `lora_checkpoint` tags its run with the batch and version it trains, once it has opened the batch:
# the run-failure alert names them.
TRAINING_BATCH_TAG_KEY = "babylon/training_batch"
MODEL_VERSION_TAG_KEY = "babylon/model_version"

# Identical in the production dagster.yaml (a test holds them together).
CONCURRENCY: dict[str, Any] = {
    "runs": {
        "tag_concurrency_limits": [
            {"key": GPU_RUN_TAG_KEY, "value": GPU_RUN_TAG_VALUE, "limit": 1},
            {"key": PARTITION_TAG_KEY, "value": {"applyLimitPerUniqueValue": True}, "limit": 1},
        ],
    },
    # Dagster sets per-pool limits in the instance's storage, not in dagster.yaml; this default is the
    # limit of every pool that has none set, and the only pool we declare is `gpu`.
    "pools": {"default_limit": 1},
}

_HEADER = (
    "# Dagster instance of the embedded profile, written by babylon_pipeline.instance.\n"
    "# Rewritten whenever it differs from what that module writes: edit the module, not this file.\n"
)


def embedded_instance_dir() -> Path:
    return babylon_home() / "dagster"


def embedded_instance_config(home: Path) -> dict[str, Any]:
    return {
        "storage": {"sqlite": {"base_dir": str(home / "storage")}},
        "run_coordinator": {"module": "dagster", "class": "QueuedRunCoordinator"},
        "concurrency": CONCURRENCY,
        "telemetry": {"enabled": False},
    }


def ensure_embedded_instance() -> Path:
    """Write the embedded instance's `dagster.yaml` unless it is already current; return its folder."""
    home = embedded_instance_dir()
    home.mkdir(parents=True, exist_ok=True)
    path = home / "dagster.yaml"
    text = _HEADER + yaml.safe_dump(embedded_instance_config(home), sort_keys=False)
    if path.exists() and path.read_text() == text:
        return home
    fd, tmp = tempfile.mkstemp(dir=home, prefix=".dagster.yaml.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)  # atomic: a concurrent reader sees the old file or the new one
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return home


if __name__ == "__main__":
    print(ensure_embedded_instance())
