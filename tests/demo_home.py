"""The home `make demo` leaves on the embedded profile, built once per test session and shared.

`demo.main` runs as `make demo` runs it (production settings unset, the embedded Dagster instance
under `BABYLON_HOME`), on the session's shared embedded base, put where the embedded profile stores
it so `base_model` finds it with its own settings and keeps it. Its output is kept beside the home.
Tests that change the home work on a copy (`copy_demo_home`).
"""

from __future__ import annotations

import contextlib
import io
import shutil
from pathlib import Path

import pytest

from babylon_pipeline import demo
from babylon_pipeline.instance import ensure_embedded_instance
from tests.embedded_base import embedded_base_objects
from tests.training_data import shared_build

PRODUCTION_SETTINGS = ("DATABASE_URL", "BABYLON_STORAGE_URL", "BABYLON_JUDGE_BASE_URL", "BABYLON_JUDGE_MODEL",
                       "BABYLON_JUDGE_API_KEY", "BASE_MODEL", "BABYLON_TRAINER", "WANDB_API_KEY", "DAGSTER_HOME")
DEMO_ARGS = ["--hours", "2", "--agents", "10", "--seed", "3"]
OUTPUT = "demo.out"
BUILT_AT = "home.path"  # where the demo ran (a staging folder, renamed once complete): its output names it


@contextlib.contextmanager
def embedded_profile(home: Path, trainer_dir: Path):
    """The environment `make demo` gives its program: no production setting, the instance under `home`."""
    with pytest.MonkeyPatch.context() as patch:
        for name in PRODUCTION_SETTINGS:
            patch.delenv(name, raising=False)
        patch.setenv("BABYLON_HOME", str(home))
        patch.setenv("BABYLON_TRAINER_WORK_DIR", str(trainer_dir))
        patch.setenv("DAGSTER_HOME", str(ensure_embedded_instance()))
        yield


def demo_home(tmp_path_factory) -> Path:
    """The folder holding `home/` as the demo left it and `demo.out`, its standard output."""

    def build(folder: Path) -> None:
        home = folder / "home"
        shutil.copytree(embedded_base_objects(tmp_path_factory) / "models", home / "objects" / "models")
        out = io.StringIO()
        with embedded_profile(home, folder / "trainer"), contextlib.redirect_stdout(out):
            demo.main(DEMO_ARGS)
        (folder / OUTPUT).write_text(out.getvalue())
        (folder / BUILT_AT).write_text(str(home))

    return shared_build(tmp_path_factory, "demo-home", build)


def copy_demo_home(tmp_path_factory, dest: Path) -> tuple[Path, str, Path]:
    """A copy of the demo's home at `dest` (its instance's `dagster.yaml` is rewritten for the new place on
    first use), the demo's output, and the home it ran in."""
    built = demo_home(tmp_path_factory)
    shutil.copytree(built / "home", dest)
    return dest, (built / OUTPUT).read_text(), Path((built / BUILT_AT).read_text())
