"""The Dagster UI as an operator uses it, in a real browser (Debian's chromium driven by
Playwright): the webserver on a free port against a temporary Dagster home and the test
databases, loaded as `make demo` loads them (7 days) with quantio's reconciliation run. Open the
asset graph and the asset list (descriptions in plain text), a table's page (its schedule in the
metadata), materialize one partition of plex/factcabecera from the UI, wait for the run to
succeed, read the two blocking checks on its Checks tab, see that a past day of factcabecera
warns of no missing upstream data (its dated parent clientes has nothing to do with its days)
while one of factlineas does (its invoices' day is not loaded), and refresh the replication
status (plex_etl/replication_status) to read every table's state.

Screenshots go to the test's temporary directory (and to docs/ui/ with
PLEX_ETL_UI_SCREENSHOTS=docs/ui), cropped to the page's content. Bounded: every wait has a
timeout, the whole test < 6 min.
"""

import datetime as dt
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from plex_etl_tests.replication import build_defs, load_like_the_demo, point_at_test_databases

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

# The screenshots docs/ui.md shows (PLEX_ETL_UI_SCREENSHOTS=docs/ui copies these only).
DOC_SCREENSHOTS = ("asset-graph", "asset-list", "asset-factcabecera", "asset-factcabecera-metadata",
                   "materialize-past-day", "run", "check-schema_matches_catalog",
                   "replication-status")

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
def webserver(demo_sources, demo_end_date, tmp_path, monkeypatch) -> Iterator[str]:
    point_at_test_databases(monkeypatch, demo_sources, tmp_path / "warehouse.duckdb")
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(INSTANCE)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.DagsterInstance.get() as instance:
        load_like_the_demo(build_defs(), instance, ("plex", "quantio"), demo_end_date)
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


@pytest.mark.timeout(360)
def test_materialize_a_partition_from_the_ui_and_read_its_checks(webserver, demo_end_date, tmp_path):
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import expect, sync_playwright

    shots = tmp_path / "screenshots"
    shots.mkdir()
    day = (demo_end_date - dt.timedelta(days=1)).isoformat()
    past = (demo_end_date - dt.timedelta(days=10)).isoformat()  # before the 7 days loaded

    def shot(page, name: str) -> None:
        # The page's content only (no navigation bar): smaller files for docs/ui.
        page.screenshot(path=str(shots / f"{name}.png"), clip={"x": 240, "y": 0, "width": 1040, "height": 800})

    def partitions_dialog(page, asset: str, partition: str):
        """The Materialize dialog of a partitioned asset with one partition typed in."""
        page.goto(f"{webserver}/assets/{asset}", wait_until="domcontentloaded")
        materialize = page.get_by_role("button", name="Materialize…")
        expect(materialize).to_be_visible(timeout=60_000)
        materialize.click()
        # A parent that never loaded: the UI asks to confirm first.
        confirm = page.get_by_role("button", name="Confirm", exact=True)
        dialog = page.get_by_role("dialog").filter(has_text="Launch runs to materialize")
        expect(confirm.or_(dialog)).to_be_visible(timeout=15_000)
        if confirm.is_visible():
            confirm.click()
        expect(dialog).to_be_visible()
        partitions = dialog.locator("input:not([type=checkbox])").first
        partitions.fill(partition)
        partitions.press("Enter")
        expect(dialog.get_by_text("1 partition", exact=True)).to_be_visible(timeout=15_000)
        return dialog

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=30_000)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
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
            # The asset list shows each description as it is written: plain sentences.
            page.goto(f"{webserver}/assets", wait_until="domcontentloaded")
            expect(page.get_by_text("MySQL table plex.asientos, loaded by day of FechaHora.").first).to_be_visible(
                timeout=60_000)
            listed = page.locator("body").inner_text()
            assert "**" not in listed and "| ---" not in listed and "| schedule" not in listed
            shot(page, "asset-list")
            # One partition of plex/factcabecera, from its page: its description, its schedule in the metadata.
            page.goto(f"{webserver}/assets/plex/factcabecera", wait_until="domcontentloaded")
            materialize = page.get_by_role("button", name="Materialize…")
            expect(materialize).to_be_visible(timeout=60_000)
            expect(page.get_by_text("MySQL table plex.factcabecera, loaded by day of Emision.")).to_be_visible()
            shot(page, "asset-factcabecera")
            page.get_by_text("each_refresh_loads", exact=True).scroll_into_view_if_needed()
            expect(page.get_by_text("every 6h (America/Argentina/Buenos_Aires)", exact=True)).to_be_visible()
            shot(page, "asset-factcabecera-metadata")
            materialize.click()
            # Its snapshot parent (plex/operadores) has loaded: no confirmation (on a fresh warehouse,
            # the UI asks to confirm first).
            confirm = page.get_by_role("button", name="Confirm", exact=True)
            dialog = page.get_by_role("dialog").filter(has_text="Launch runs to materialize")
            expect(confirm.or_(dialog)).to_be_visible(timeout=15_000)
            if confirm.is_visible():
                shot(page, "upstream-never-loaded")
                confirm.click()
            expect(dialog).to_be_visible()
            shot(page, "materialize-dialog-open")
            partitions = dialog.locator("input:not([type=checkbox])").first
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
            # A past day of factlineas: the lines of that day belong to invoices of that day, which
            # are not loaded: a real warning (Dagster opens the Warnings section when it has one).
            dialog = partitions_dialog(page, "plex/factlineas", past)
            expect(dialog.get_by_text("Upstream data missing")).to_be_visible(timeout=30_000)
            dialog.get_by_role("button", name="Cancel", exact=True).click()
            # A past day of factcabecera: its dated parent clientes has no loaded day at all, which
            # is no reason to warn (an invoice's client may be of any day).
            dialog = partitions_dialog(page, "plex/factcabecera", past)
            page.wait_for_timeout(5_000)  # longer than factlineas' warning took to show
            assert "Upstream data missing" not in dialog.inner_text()
            shot(page, "materialize-past-day")
            dialog.get_by_role("button", name="Cancel", exact=True).click()
            # The replication status: refreshed from its page, every table in one table.
            page.goto(f"{webserver}/assets/plex_etl/replication_status", wait_until="domcontentloaded")
            refresh = page.get_by_role("button", name=re.compile(r"Materialize$"))
            expect(refresh).to_be_visible(timeout=60_000)
            refresh.click()
            page.get_by_role("link", name="View", exact=True).first.click(timeout=30_000)
            expect(page.get_by_text("Success", exact=True).first).to_be_visible(timeout=120_000)
            page.goto(f"{webserver}/assets/plex_etl/replication_status", wait_until="domcontentloaded")
            summary = page.get_by_text(re.compile(r"^\d+ tables: \d+ OK, \d+ WARN, \d+ FAIL"))
            expect(summary).to_be_visible(timeout=60_000)
            expect(page.get_by_role("cell", name="plex.factcabecera", exact=True)).to_be_visible()
            expect(page.get_by_role("cell", name="quantio.stocklotes", exact=True)).to_be_visible()
            # Its latest materialization, as the Events tab shows it: the summary, then the table.
            page.goto(f"{webserver}/assets/plex_etl/replication_status?view=events", wait_until="domcontentloaded")
            expect(page.get_by_role("cell", name="plex.factcabecera", exact=True)).to_be_visible(timeout=60_000)
            page.get_by_text("Metadata", exact=True).first.evaluate("e => e.scrollIntoView({block: 'start'})")
            shot(page, "replication-status")
        except Exception:
            shot(page, "failure")
            raise
        finally:
            browser.close()
            target = os.environ.get("PLEX_ETL_UI_SCREENSHOTS")
            if target:
                Path(target).mkdir(parents=True, exist_ok=True)
                for name in DOC_SCREENSHOTS:
                    if (shots / f"{name}.png").exists():
                        shutil.copy(shots / f"{name}.png", Path(target) / f"{name}.png")
