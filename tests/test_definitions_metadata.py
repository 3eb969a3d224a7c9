"""What the UI shows about every definition: descriptions, kinds, owners, and links to the code."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from babylon_pipeline.catalog import GIT_REF_ENV, GIT_URL_ENV, OWNER
from babylon_pipeline.definitions import build_definitions

REPO = Path(__file__).resolve().parents[1]
CODE_REFERENCES = "dagster/code_references"


@pytest.fixture
def repository(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dg.RepositoryDefinition:
    """The code location as the embedded profile loads it, no git remote configured."""
    for name in ("DATABASE_URL", "BABYLON_STORAGE_URL", "BABYLON_TRAINER", GIT_URL_ENV, GIT_REF_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BABYLON_HOME", str(tmp_path / "babylon"))
    return build_definitions().get_repository_def()


def _references(repository: dg.RepositoryDefinition, key: dg.AssetKey) -> list:
    value = repository.asset_graph.get(key).metadata.get(CODE_REFERENCES)
    return list(value.code_references) if value is not None else []


def test_every_asset_has_a_description_kinds_an_owner_and_a_reference_to_its_definition(repository) -> None:
    keys = repository.asset_graph.get_all_asset_keys()
    assert len(keys) >= 8
    for key in keys:
        node, name = repository.asset_graph.get(key), key.to_user_string()
        assert node.description, f"{name}: no description"
        assert node.kinds, f"{name}: no kinds"
        assert OWNER in node.owners, f"{name}: owners {node.owners}"
        references = _references(repository, key)
        assert references, f"{name}: no code references"
        for reference in references:
            assert isinstance(reference, dg.LocalFileCodeReference), reference
            lines = Path(reference.file_path).read_text().splitlines()
            # the reference names the line of the decorator; the function it decorates follows
            following = "\n".join(lines[reference.line_number - 1:reference.line_number + 30])
            assert f"def {key.path[-1]}(" in following, f"{name}: {reference.file_path}:{reference.line_number}"


def test_every_job_sensor_schedule_and_check_has_a_description(repository) -> None:
    # `__ASSET_JOB` and the anonymous job of an asset-selecting sensor are Dagster's own, not shown as jobs
    jobs = [job for job in repository.get_all_jobs() if not job.name.startswith("__")]
    assert {job.name for job in jobs} >= {"window_job", "training_job", "evaluation_job", "deploy_job"}
    missing = [f"job {job.name}" for job in jobs if not job.description]
    missing += [f"sensor {sensor.name}" for sensor in repository.sensor_defs if not sensor.description]
    missing += [f"schedule {schedule.name}" for schedule in repository.schedule_defs if not schedule.description]
    checks = repository.asset_graph.asset_check_keys
    assert len(checks) >= 9
    missing += [f"check {key.to_user_string()}" for key in checks
                if not repository.asset_graph.get_check_spec(key).description]
    assert not missing, missing


def test_code_references_link_into_the_repository_when_its_url_is_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("DATABASE_URL", "BABYLON_STORAGE_URL", "BABYLON_TRAINER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BABYLON_HOME", str(tmp_path / "babylon"))
    monkeypatch.setenv(GIT_URL_ENV, "https://github.com/babylon/babylon-pipeline/")
    monkeypatch.setenv(GIT_REF_ENV, "4b500f2")
    repository = build_definitions().get_repository_def()

    references = _references(repository, dg.AssetKey("ruler_scores"))
    assert len(references) == 1 and isinstance(references[0], dg.UrlCodeReference)
    url, _, line = references[0].url.partition("#L")
    assert url == "https://github.com/babylon/babylon-pipeline/tree/4b500f2/babylon_pipeline/assets/windows.py"
    assert "def ruler_scores(" in "\n".join((REPO / "babylon_pipeline/assets/windows.py").read_text()
                                           .splitlines()[int(line) - 1:int(line) + 30])
