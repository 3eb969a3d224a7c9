"""The admin panel (the Dagster UI) used as a person uses it, in a real browser (issue 16 part 2).

On a copy of the home `make demo` leaves (`tests/demo_home.py`), `dagster-webserver` and `dagster-daemon`
serve this checkout's definitions (`tests/dagster_ui.py`); Chromium, driven by Playwright, clicks through
the lineage, a window's metadata plots, the versions' figures, the readiness sensor's skip reason, a
rollback launched from the Launchpad, and a bad config value the Launchpad refuses. What a page shows is
checked in the page; what a click changed is checked where it lands: the deployment in the copy's
`babylon.db`, the run's status through the webserver's /graphql.

One test, one panel: starting the servers is most of the cost, and the steps run in order (the
versions' figures are read before the rollback changes them). Screenshots go under the test's
`tmp_path`; their paths, the browser's versions and the test's time are in the log (`record_property`);
`docs/images/` holds copies from a run of this test.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from babylon_pipeline.serving.state import deployment_history, read_deployment
from babylon_pipeline.store.db import make_engine
from tests.dagster_ui import CHROMIUM, INSTALL_HINT, LOCATION, Panel, browser_versions, dagster_panel
from tests.demo_home import copy_demo_home, embedded_profile

LINEAGE = [  # each chain of the demo's lineage, upstream first: the graph must lay each out left to right
    ["window_trajectories", "outcome_rewards", "art_groups", "ruler_scores", "lora_checkpoint"],
    ["base_model", "lora_checkpoint", "model_evaluation", "deployed_model", "model_versions"],
]
WINDOW_ASSET = "window_trajectories"
PLOTTED = ["trajectories", "data_quality"]  # numeric metadata of every window, plotted across partitions
VERSION = "v1.0.0"
# (asset, text): the asset's page, at the demo's version when it is partitioned by version, shows the text.
VERSION_FIGURES = [
    ("deployed_model", "canary_fraction"),
    ("deployed_model", "canary"),
    ("model_evaluation", "verdict"),
    ("model_evaluation", "comparison"),
    ("lora_checkpoint", "final_loss"),
    ("model_versions", "canary_versions"),  # the versions table (not partitioned: its latest materialization)
]
SENSOR = "training_readiness_sensor"
RUN_TIMEOUT_S = 120
FINISHED = {"SUCCESS", "FAILURE", "CANCELED"}
TICK_TIMEOUT_S = 90
VIEWPORT = {"width": 1280, "height": 720}
TICKS_QUERY = """query($selector: SensorSelector!) { sensorOrError(sensorSelector: $selector) { __typename
  ... on Sensor { sensorState { ticks(limit: 1) { status skipReason } } } } }"""
RUNS_QUERY = """query($job: String!) { runsOrError(filter: {pipelineName: $job}) {
  ... on Runs { results { runId } } } }"""
RUN_QUERY = """query($id: ID!) { runOrError(runId: $id) { __typename ... on Run { status jobName runConfigYaml } } }"""


@pytest.fixture
def home(tmp_path, tmp_path_factory) -> Path:
    """A copy of the demo's home, made before Playwright starts: building the shared home runs the demo, whose
    judge calls `asyncio.run`, which cannot run inside the event loop Playwright's sync API keeps running."""
    home, _, _ = copy_demo_home(tmp_path_factory, tmp_path / "home")
    return home


@pytest.fixture
def browser(home: Path, record_property) -> Iterator[Browser]:
    """Debian's Chromium through Playwright (after `home`); a missing one fails with the install hint."""
    assert CHROMIUM.exists(), INSTALL_HINT
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        record_property("browser", f"{browser_versions()} (launched: {browser.version})")
        yield browser
        browser.close()


def test_the_admin_panel_shows_the_pipeline_and_launches_a_rollback(tmp_path, home: Path, browser,
                                                                     record_property) -> None:
    started = time.monotonic()
    with embedded_profile(home, tmp_path / "trainer"):
        env = dict(os.environ)
    shots = tmp_path / "screenshots"
    with dagster_panel(env, tmp_path / "logs") as panel:
        record_property("panel_up_after_s", f"{time.monotonic() - started:.1f}")
        page = browser.new_page(viewport=VIEWPORT)
        page.set_default_timeout(30_000)

        check_the_lineage(page, panel, shots)
        check_the_window_plots(page, panel, shots)
        check_the_versions_figures(page, panel)
        check_the_sensor_says_why_training_waits(page, panel)
        check_a_rollback_launched_from_the_launchpad(page, panel, home, shots)
        check_a_bad_config_value_is_refused(page, panel)
    record_property("seconds", f"{time.monotonic() - started:.1f} (the servers and the browser)")
    record_property("screenshots", " ".join(sorted(str(path) for path in shots.iterdir())))


def check_the_lineage(page: Page, panel: Panel, shots: Path) -> None:
    """The global lineage, groups expanded: every asset a node, each chain laid out upstream to downstream."""
    page.goto(f"{panel.url}/asset-groups")
    expect(page.get_by_text("Join the Dagster community")).to_be_visible()  # a fresh instance's first visit
    page.get_by_role("button", name="Skip").click()
    page.get_by_role("button", name="settings", exact=True).click()  # the graph's gear
    page.get_by_role("menuitem", name=re.compile("Expand all groups")).click()
    page.keyboard.press("Escape")
    nodes = page.locator("foreignObject").filter(has=page.locator("[class*=assetName]"))
    expect(nodes).to_have_count(len({asset for chain in LINEAGE for asset in chain}))
    x = {}
    for node in nodes.all():
        name = node.locator("[class*=assetName]").inner_text()
        if "…" in name:  # a long name is shortened on the node; hovering shows it whole
            node.hover()
            name = page.get_by_role("tooltip").inner_text()
        x[name] = float(node.get_attribute("x"))
    for chain in LINEAGE:
        assert [x[asset] for asset in chain] == sorted(x[asset] for asset in chain) and len(
            {x[asset] for asset in chain}) == len(chain), (chain, x)
    page.get_by_text("Global asset lineage").hover()  # the pointer off the graph: no tooltip in the picture
    page.keyboard.press("Escape")
    expect(page.get_by_role("tooltip")).to_have_count(0)
    page.screenshot(path=shots / "asset-lineage.png")


def check_the_window_plots(page: Page, panel: Panel, shots: Path) -> None:
    """A window asset's page plots its numeric metadata across the windows (partitions)."""
    page.goto(f"{panel.url}/assets/{WINDOW_ASSET}")
    page.get_by_role("button", name="Plots").click()
    for label in PLOTTED:
        expect(page.get_by_text(label, exact=True).first).to_be_visible()
    page.screenshot(path=shots / "window-plots.png")


def check_the_versions_figures(page: Page, panel: Panel) -> None:
    for asset, text in VERSION_FIGURES:
        page.goto(f"{panel.url}/assets/{asset}?partition={VERSION}")
        expect(page.get_by_text(text, exact=True).first).to_be_visible()


def check_the_sensor_says_why_training_waits(page: Page, panel: Panel) -> None:
    """The readiness sensor's page shows its latest tick's skip reason, as the daemon recorded it."""
    selector = {"repositoryLocationName": LOCATION, "repositoryName": "__repository__", "sensorName": SENSOR}
    deadline = time.monotonic() + TICK_TIMEOUT_S
    while not (ticks := panel.graphql(TICKS_QUERY, {"selector": selector})["sensorOrError"]["sensorState"]["ticks"]):
        assert time.monotonic() < deadline, f"no tick of {SENSOR} within {TICK_TIMEOUT_S}s: is the daemon running?"
        time.sleep(2)
    [tick] = ticks
    assert tick["status"] == "SKIPPED" and tick["skipReason"], tick
    page.goto(f"{panel.url}/automation")
    page.get_by_role("link", name=SENSOR).click()
    newest = page.locator("table").filter(has_text="Timestamp").locator("tbody tr").first
    newest.get_by_text("0 runs requested").last.click()  # the Result column opens the tick
    expect(page.get_by_role("dialog")).to_contain_text(f"Skip reason: {tick['skipReason']}")
    page.get_by_role("button", name="Close").click()


def check_a_rollback_launched_from_the_launchpad(page: Page, panel: Panel, home: Path, shots: Path) -> None:
    """rollback_job launched by clicking, with a reason typed in its config: the canary is off in the database
    with that reason in its history, and the run succeeded."""
    reason = f"rolled back from the browser {uuid.uuid4().hex[:8]}"
    page.goto(f"{panel.url}/locations/{LOCATION}/jobs/rollback_job")
    page.get_by_role("tab", name="Launchpad").click()
    _set_config_value(page, "reason: rolled back by hand", "rolled back by hand", reason)
    page.get_by_role("button", name="Launch Run").click()
    page.wait_for_url(re.compile(r"/runs/[0-9a-f-]{36}"))
    run_id = re.search(r"/runs/([0-9a-f-]{36})", page.url)[1]
    run = _wait_for_run(panel, run_id)
    assert run["status"] == "SUCCESS" and run["jobName"] == "rollback_job" and reason in run["runConfigYaml"], run
    expect(page.get_by_text("Success").first).to_be_visible()
    page.screenshot(path=shots / "rollback-run.png")

    engine = make_engine(f"sqlite:///{home / 'babylon.db'}")
    deployment, last = read_deployment(engine), deployment_history(engine).iloc[-1]
    engine.dispose()
    assert (deployment.canary, deployment.in_service) == (None, None), deployment
    assert (last["action"], last["from_version"], last["reason"]) == ("rollback", VERSION, reason), last


def check_a_bad_config_value_is_refused(page: Page, panel: Panel) -> None:
    """deploy_job with a fraction that is not a number: the Launchpad names the error and will not launch."""
    runs_before = panel.graphql(RUNS_QUERY, {"job": "deploy_job"})["runsOrError"]["results"]
    page.goto(f"{panel.url}/locations/{LOCATION}/jobs/deploy_job/playground")
    launch = page.get_by_role("button", name="Launch Run")
    expect(launch).to_be_enabled()
    _set_config_value(page, "fraction: 0.1", "0.1", "abc")
    error = 'Invalid scalar at path root:ops:deployed_model:config:fraction. Value "abc"'
    expect(page.get_by_text(error).first).to_be_visible()
    expect(launch).to_be_disabled()
    assert panel.graphql(RUNS_QUERY, {"job": "deploy_job"})["runsOrError"]["results"] == runs_before


def _set_config_value(page: Page, line: str, old: str, new: str) -> None:
    """In the Launchpad's config editor: to the end of `line`, erase `old`, type `new`."""
    page.locator(".CodeMirror-line").filter(has_text=line).click()
    page.keyboard.press("End")
    for _ in old:
        page.keyboard.press("Backspace")
    page.keyboard.type(new)


def _wait_for_run(panel: Panel, run_id: str) -> dict:
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while (run := panel.graphql(RUN_QUERY, {"id": run_id})["runOrError"])["status"] not in FINISHED:
        assert time.monotonic() < deadline, f"run {run_id} still {run['status']} after {RUN_TIMEOUT_S}s"
        time.sleep(1)
    return run
