"""The shell commands of the README and of the pages in docs/ (their fenced ```bash blocks), run as written,
so they cannot rot; and their relative links, so none points nowhere.

They run page by page in the order `PAGES` declares (the README first; docs/cli.md simulates the windows
docs/windows.md backfills), block by block, each block as one bash script (an `export` carries to the
block's next lines), in the repository root, on a copy of the home `make demo` leaves
(`tests/demo_home.py`), with the embedded profile's environment: no production setting, `BABYLON_HOME`
the copy, the venv first on `PATH`. A command this test does not run must be named in `NOT_RUN` with the
reason, so a new command cannot slip past it; none of the commands needs Postgres or S3. Every page in
docs/ must be in `PAGES`, so a new page's commands run too.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import dagster as dg

from tests.demo_home import PRODUCTION_SETTINGS, copy_demo_home, embedded_profile

REPO = Path(__file__).resolve().parent.parent
PAGES = ("README.md", "docs/configuration.md", "docs/cli.md", "docs/store.md", "docs/simulator.md",
         "docs/windows.md", "docs/training.md", "docs/evaluation.md", "docs/deployment.md", "docs/alerts.md",
         "docs/failure-model.md", "docs/benchmarks.md", "docs/layout.md", "docs/admin-panel.md",
         "docs/production.md")
FENCE = re.compile(r"^(?P<indent>[ \t]*)```bash[ \t]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.MULTILINE | re.DOTALL)
NOT_RUN = {
    "make test": "the test suite itself",
    "make demo": "tests/test_demo.py runs its program; the commands here run on the home it leaves",
}
BLOCK_TIMEOUT_S = 900
CODE = re.compile(r"^[ \t]*```.*?^[ \t]*```[ \t]*$|`[^`\n]*`", re.MULTILINE | re.DOTALL)
LINK = re.compile(r"\]\((?P<target>[^)\s]+)(?:\s+\"[^\"]*\")?\)")


def bash_blocks(text: str) -> list[list[str]]:
    """Each fenced ```bash block's commands: comments and blank lines dropped, `\\` continuations joined."""
    blocks = []
    for match in FENCE.finditer(text):
        body = textwrap.dedent(match["body"]).replace("\\\n", " ")
        commands = [re.sub(r"\s+#.*$|^#.*$", "", line).strip() for line in body.splitlines()]
        blocks.append([command for command in commands if command])
    return blocks


def page_blocks() -> list[tuple[str, list[str]]]:
    """Every page's bash blocks, in the order they run: (page, commands of one block)."""
    return [(page, block) for page in PAGES for block in bash_blocks((REPO / page).read_text())]


def relative_links(text: str) -> list[str]:
    """The targets of the markdown links in `text` that are not URLs, code left out."""
    targets = [match["target"] for match in LINK.finditer(CODE.sub("", text))]
    return [target for target in targets if not re.match(r"[a-z][a-z0-9+.-]*:", target)]


def test_every_page_in_docs_runs_in_the_declared_order_and_is_linked_from_the_readme() -> None:
    present = {path.relative_to(REPO).as_posix() for path in (REPO / "docs").glob("*.md")}
    assert PAGES[0] == "README.md" and len(set(PAGES)) == len(PAGES)
    assert set(PAGES[1:]) == present, "docs/ and PAGES differ"
    assert set(PAGES[1:]) <= set(relative_links((REPO / "README.md").read_text()))


def test_every_relative_link_names_an_existing_file_without_an_anchor() -> None:
    pages = ["README.md", *sorted(path.relative_to(REPO).as_posix() for path in (REPO / "docs").glob("*.md"))]
    broken = []
    for page in pages:
        for target in relative_links((REPO / page).read_text()):
            resolved = ((REPO / page).parent / target).resolve()
            in_repo = resolved.is_relative_to(REPO)
            if "#" in target or not in_repo or not resolved.is_file():
                broken.append(f"{page}: ({target})")
    assert not broken


def test_the_pages_have_commands_and_name_every_one_they_do_not_run() -> None:
    commands = [command for _, block in page_blocks() for command in block]
    assert len(commands) >= 8
    assert set(NOT_RUN) <= set(commands), "a command in NOT_RUN is no longer on any page"


def test_the_pages_commands_run_as_written_on_the_home_make_demo_leaves(tmp_path, tmp_path_factory) -> None:
    home, _, _ = copy_demo_home(tmp_path_factory, tmp_path / "home")
    env = {name: value for name, value in os.environ.items()
           if name not in PRODUCTION_SETTINGS and not name.startswith("BABYLON_")}
    env |= {"BABYLON_HOME": str(home), "BABYLON_TRAINER_WORK_DIR": str(tmp_path / "trainer"),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
            "PYTHONPATH": str(REPO)}  # this checkout's code, whichever checkout the venv was installed from
    ran = []
    for page, block in page_blocks():
        script = "\n".join(command for command in block if command not in NOT_RUN)
        if not script:
            continue
        result = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=REPO, env=env, capture_output=True,
                                text=True, timeout=BLOCK_TIMEOUT_S)
        assert result.returncode == 0, (f"{page}:\n{script}\nexited {result.returncode}:\n{result.stdout}\n"
                                        f"{result.stderr[-3000:]}")
        ran.append(result.stdout)
    output = "\n".join(ran)
    assert "simulated 24 windows (2025-11-15T10:00 .. 2025-11-16T09:00)" in output
    assert "agents act with v1.0.0" in output
    assert '"window": "2025-11-15T10:00"' in output
    with embedded_profile(home, tmp_path / "trainer"), dg.DagsterInstance.get() as instance:  # the backfill's work
        scored = instance.get_materialized_partitions(dg.AssetKey("ruler_scores"))
    assert {"2025-11-15-10:00", "2025-11-16-09:00"} <= scored
