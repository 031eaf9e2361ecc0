"""The Dagster UI as an operator uses it, in a real browser (Debian's chromium driven by
Playwright): the webserver on a free port against a temporary Dagster home and the test
databases; open the asset graph, materialize one partition of plex/factcabecera from the
UI, wait for the run to succeed, and read the two blocking checks on its Checks tab.

Screenshots go to the test's temporary directory (and to docs/ui/ with
PLEX_ETL_UI_SCREENSHOTS=docs/ui). Bounded: every wait has a timeout, the whole test < 3 min.
"""

import datetime as dt
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from plex_etl_tests.replication import point_at_test_databases

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
INSTANCE = """\
telemetry:
  enabled: false
run_coordinator:
  module: dagster._core.run_coordinator.default_run_coordinator
  class: DefaultRunCoordinator
"""

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="chromium is not installed (scripts/ensure-build-deps.sh installs it)"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


@pytest.fixture
def webserver(demo_sources, tmp_path, monkeypatch) -> Iterator[str]:
    point_at_test_databases(monkeypatch, demo_sources, tmp_path / "warehouse.duckdb")
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(INSTANCE)
    port = free_port()
    log = (tmp_path / "webserver.log").open("w")
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "dagster-webserver"), "-m", "plex_etl.definitions",
         "-h", "127.0.0.1", "-p", str(port)],
        env=dict(os.environ, DAGSTER_HOME=str(home)), stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for(f"http://127.0.0.1:{port}/server_info", timeout=60)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=5)
        log.close()


def check_status(text: str, check: str) -> str:
    """The status line under a check's name in the Checks tab's list ('Succeeded', 'Failed', ...)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    statuses = [lines[i + 1] for i, line in enumerate(lines[:-1]) if line == check and lines[i + 1] != check]
    return statuses[0] if statuses else "not shown"


@pytest.mark.timeout(180)
def test_materialize_a_partition_from_the_ui_and_read_its_checks(webserver, demo_end_date, tmp_path):
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import expect, sync_playwright

    shots = tmp_path / "screenshots"
    shots.mkdir()
    day = (demo_end_date - dt.timedelta(days=1)).isoformat()

    def shot(page, name: str) -> None:
        page.screenshot(path=str(shots / f"{name}.png"))

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=30_000)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(30_000)
            # Dagster's "Join the community" dialog on a fresh instance: skip it whenever it shows.
            page.add_locator_handler(page.get_by_role("button", name="Skip", exact=True), lambda b: b.click())
            # The asset graph.
            page.goto(f"{webserver}/asset-groups", wait_until="domcontentloaded")
            expect(page.get_by_text("factcabecera").first).to_be_visible(timeout=60_000)
            skip = page.get_by_role("button", name="Skip", exact=True)
            try:  # the community dialog shows a moment after the first page of a fresh instance
                skip.wait_for(timeout=8_000)
                skip.click()
            except PlaywrightTimeout:
                pass
            shot(page, "asset-graph")
            # One partition of plex/factcabecera, from its page.
            page.goto(f"{webserver}/assets/plex/factcabecera", wait_until="domcontentloaded")
            materialize = page.get_by_role("button", name="Materialize…")
            expect(materialize).to_be_visible(timeout=60_000)
            shot(page, "asset-factcabecera")
            materialize.click()
            # A fresh warehouse: its parents (plex/clientes, plex/operadores) never loaded, and the UI says so.
            confirm = page.get_by_role("button", name="Confirm", exact=True)
            dialog = page.get_by_role("dialog").filter(has_text="Launch runs to materialize")
            expect(confirm.or_(dialog)).to_be_visible(timeout=15_000)
            if confirm.is_visible():
                shot(page, "upstream-never-loaded")
                confirm.click()
            expect(dialog).to_be_visible()
            shot(page, "materialize-dialog-open")
            partitions = dialog.locator("input").first
            partitions.fill(day)
            partitions.press("Enter")
            shot(page, "materialize-dialog")
            dialog.get_by_role("button", name="Launch 1 run").click()
            # The run, until it succeeds.
            page.get_by_role("link", name="View", exact=True).first.click(timeout=30_000)  # the launch toast
            expect(page.get_by_text("Success", exact=True).first).to_be_visible(timeout=120_000)  # the run's status
            shot(page, "run")
            page.goto(f"{webserver}/runs", wait_until="domcontentloaded")
            expect(page.get_by_text("Success", exact=True).first).to_be_visible(timeout=30_000)
            shot(page, "runs")
            # The Checks tab: both blocking checks passed.
            page.goto(f"{webserver}/assets/plex/factcabecera?view=checks", wait_until="domcontentloaded")
            expect(page.get_by_text("Checks (")).to_be_visible()
            for check in ("schema_matches_catalog", "row_count_matches_mysql"):
                name = page.get_by_text(check, exact=True).first
                expect(name).to_be_visible()
                assert check_status(page.locator("body").inner_text(), check) == "Succeeded", check
                name.click()
                expect(page.get_by_text("Evaluation result")).to_be_visible()
                expect(page.get_by_text("This is a blocking asset check.", exact=False)).to_be_visible()
                shot(page, f"check-{check}")
        except Exception:
            shot(page, "failure")
            raise
        finally:
            browser.close()
            target = os.environ.get("PLEX_ETL_UI_SCREENSHOTS")
            if target:
                for png in shots.glob("*.png"):
                    shutil.copy(png, Path(target) / png.name)
