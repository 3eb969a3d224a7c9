"""The README's shell commands (its fenced ```bash blocks), run as written, so they cannot rot.

They run in order, each block as one bash script (an `export` carries to the block's next lines), in
the repository root, on a copy of the home `make demo` leaves (`tests/demo_home.py`), with the
embedded profile's environment: no production setting, `BABYLON_HOME` the copy, the venv first on
`PATH`. A command this test does not run must be named in `NOT_RUN` with the reason, so a new
command cannot slip past it; none of the README's commands needs Postgres or S3.
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
README = REPO / "README.md"
FENCE = re.compile(r"^(?P<indent>[ \t]*)```bash[ \t]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.MULTILINE | re.DOTALL)
NOT_RUN = {
    "make test": "the test suite itself",
    "make demo": "tests/test_demo.py runs its program; the commands here run on the home it leaves",
}
BLOCK_TIMEOUT_S = 900


def bash_blocks(text: str) -> list[list[str]]:
    """Each fenced ```bash block's commands: comments and blank lines dropped, `\\` continuations joined."""
    blocks = []
    for match in FENCE.finditer(text):
        body = textwrap.dedent(match["body"]).replace("\\\n", " ")
        commands = [re.sub(r"\s+#.*$|^#.*$", "", line).strip() for line in body.splitlines()]
        blocks.append([command for command in commands if command])
    return blocks


def test_the_readme_has_commands_and_names_every_one_it_does_not_run() -> None:
    commands = [command for block in bash_blocks(README.read_text()) for command in block]
    assert len(commands) >= 8
    assert set(NOT_RUN) <= set(commands), "a command in NOT_RUN is no longer in the README"


def test_the_readme_commands_run_as_written_on_the_home_make_demo_leaves(tmp_path, tmp_path_factory) -> None:
    home, _, _ = copy_demo_home(tmp_path_factory, tmp_path / "home")
    env = {name: value for name, value in os.environ.items()
           if name not in PRODUCTION_SETTINGS and not name.startswith("BABYLON_")}
    env |= {"BABYLON_HOME": str(home), "BABYLON_TRAINER_WORK_DIR": str(tmp_path / "trainer"),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
            "PYTHONPATH": str(REPO)}  # this checkout's code, whichever checkout the venv was installed from
    ran = []
    for block in bash_blocks(README.read_text()):
        script = "\n".join(command for command in block if command not in NOT_RUN)
        if not script:
            continue
        result = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=REPO, env=env, capture_output=True,
                                text=True, timeout=BLOCK_TIMEOUT_S)
        assert result.returncode == 0, (f"{script}\nexited {result.returncode}:\n{result.stdout}\n"
                                        f"{result.stderr[-3000:]}")
        ran.append(result.stdout)
    output = "\n".join(ran)
    assert "simulated 24 windows (2025-11-15T10:00 .. 2025-11-16T09:00)" in output
    assert "agents act with v1.0.0" in output
    assert '"window": "2025-11-15T10:00"' in output
    with embedded_profile(home, tmp_path / "trainer"), dg.DagsterInstance.get() as instance:  # the backfill's work
        scored = instance.get_materialized_partitions(dg.AssetKey("ruler_scores"))
    assert {"2025-11-15-10:00", "2025-11-16-09:00"} <= scored
