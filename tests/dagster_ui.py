"""The Dagster UI as `make dev` serves it, on a loopback port, for tests that use it in a real browser.

`dagster-webserver` and `dagster-daemon run` start as separate commands against one `DAGSTER_HOME`, each in
its own process session (so stopping one stops the code servers and runs it started). The daemon is part
of the panel, not an extra: the embedded instance queues runs (`QueuedRunCoordinator`), so a run launched
from the Launchpad starts only when the daemon dequeues it, and sensor ticks (with their skip reasons)
exist only once the daemon has evaluated them.

The browser is Debian's Chromium (`/usr/bin/chromium`, installed by `make install`): Playwright cannot
download its own here, and it ignores `PLAYWRIGHT_CHROMIUM_EXECUTABLE_PATH`, so the path is passed to
`launch`. A missing Chromium fails the test with the install hint; it never skips.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
LOCATION = "babylon_pipeline.definitions"
CHROMIUM = Path("/usr/bin/chromium")
INSTALL_HINT = (f"{CHROMIUM} is missing: the admin-panel browser test drives Debian's Chromium. Run `make install` "
                f"(it installs it) or `apt-get install -y chromium` as root.")
START_TIMEOUT_S = 180
STOP_TIMEOUT_S = 20
LOCATION_QUERY = """{ workspaceOrError { __typename ... on Workspace { locationEntries { name loadStatus
  locationOrLoadError { __typename ... on PythonError { message } } } } } }"""


def browser_versions() -> str:
    """Playwright's version and the Chromium it drives, for the test log."""
    if not CHROMIUM.exists():
        return f"playwright {version('playwright')}; {INSTALL_HINT}"
    chromium = subprocess.run([str(CHROMIUM), "--version"], capture_output=True, text=True, timeout=30).stdout
    return f"playwright {version('playwright')}; {CHROMIUM}: {chromium.strip()}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class Panel:
    url: str
    port: int
    logs: Path

    def graphql(self, query: str, variables: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The webserver's /graphql answer's `data`; its errors fail the test."""
        request = urllib.request.Request(f"{self.url}/graphql", method="POST",
                                         data=json.dumps({"query": query, "variables": variables or {}}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            answer = json.load(response)
        assert not answer.get("errors"), answer["errors"]
        return answer["data"]


@contextmanager
def dagster_panel(env: Mapping[str, str], logs: Path, *, daemon: bool = True,
                  read_only: bool = False) -> Iterator[Panel]:
    """`dagster-webserver` (and `dagster-daemon run`) on this checkout's definitions, until the block ends."""
    logs.mkdir(parents=True, exist_ok=True)
    port = free_port()
    bin_dir = Path(sys.executable).parent
    workspace = ["-m", LOCATION, "-d", str(REPO)]
    web = [str(bin_dir / "dagster-webserver"), *workspace, "-h", "127.0.0.1", "-p", str(port),
           *(["--read-only"] if read_only else [])]
    env = {**env, "PYTHONPATH": str(REPO)}  # this checkout's code, whichever checkout the venv was installed from
    with ExitStack() as stack:
        server = stack.enter_context(process_session(web, env, logs / "webserver.log"))
        if daemon:
            stack.enter_context(process_session([str(bin_dir / "dagster-daemon"), "run", *workspace], env,
                                         logs / "daemon.log"))
        panel = Panel(f"http://127.0.0.1:{port}", port, logs)
        _wait_until_loaded(panel, server, logs / "webserver.log")
        yield panel


@contextmanager
def process_session(command: list[str], env: Mapping[str, str], log: Path) -> Iterator[subprocess.Popen]:
    with log.open("w") as out:
        process = subprocess.Popen(command, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        yield process
    finally:
        stop_session(process)


def stop_session(process: subprocess.Popen) -> None:
    """SIGTERM to the process's session group (its code servers and runs too), SIGKILL if it lingers."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
            return
        except subprocess.TimeoutExpired:
            continue


def _wait_until_loaded(panel: Panel, server: subprocess.Popen, log: Path) -> None:
    """Until /server_info answers and the code location is loaded; a dead server or a load error fails."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        assert server.poll() is None, f"dagster-webserver exited {server.returncode}:\n{log.read_text()[-3000:]}"
        try:
            urllib.request.urlopen(f"{panel.url}/server_info", timeout=5).close()
            [entry] = panel.graphql(LOCATION_QUERY)["workspaceOrError"]["locationEntries"]
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            entry = None
        if entry and entry["loadStatus"] == "LOADED":
            loaded = entry["locationOrLoadError"]
            assert loaded["__typename"] == "RepositoryLocation", loaded
            return
        time.sleep(1)
    raise AssertionError(f"the Dagster UI did not load {LOCATION} within {START_TIMEOUT_S}s:\n"
                         f"{log.read_text()[-3000:]}")
