"""The live dashboard in headless Chromium (Debian's), under a bounded load of a few hundred
requests: its charts get data points, its tables show the worker, nothing is fetched from
anywhere but the server, and the screenshot is kept for a person to look at."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from tests.ops.processes import Processes, get, wait_until

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    started = Processes(tmp_path)
    yield started
    started.stop_all()


def _points(page, chart: str) -> int:
    return int(page.get_attribute(f"#{chart}", "data-points") or 0)


@pytest.mark.slow
def test_dashboard_in_chromium_under_load(tmp_path, processes):
    """After 300 requests (two of them slow, so a queue builds) the depth, throughput,
    latency and worker charts have several data points each, the depth chart saw waiting
    messages, the workers table lists w1 with its processed count, and every request the
    page made went to the interface server."""
    assert os.path.exists(CHROMIUM), "Debian's chromium is required: apt-get install chromium"
    url = f"sqlite:///{tmp_path}/layer.db"
    processes.worker(url, "w1", heartbeat=2.5, ttl=7.5)  # beats every 0.5 s
    _, port = processes.server(url, "--dashboard", "--ops-interval", "0.4")
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: get(base + "/")[0] == 200, "the application")
    requested: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1300})
            page.on("request", lambda request: requested.append(request.url))
            page.goto(base + "/-/dashboard")
            paths = ["/slow", *["/"] * 149, "/slow", *["/"] * 149]
            with ThreadPoolExecutor(16) as pool:
                codes = list(pool.map(lambda path: get(base + path, timeout=30)[0], paths))
            assert codes == [200] * 300
            page.wait_for_function(
                "document.querySelector('#workers')?.textContent.includes('w1')"
                " && Number(document.querySelector('#chart-latency').dataset.points) >= 3",
                timeout=15_000)
            page.wait_for_timeout(1500)  # a few more polls after the load
            shot = tmp_path / "dashboard.png"
            page.screenshot(path=str(shot), full_page=True)
            keep = os.environ.get("SWITCHBOARD_SCREENSHOT_DIR")
            if keep:
                shutil.copy(shot, Path(keep) / "dashboard.png")
            assert shot.stat().st_size > 30_000
            for chart in ("chart-depth", "chart-throughput", "chart-latency", "chart-workers"):
                assert _points(page, chart) >= 3, chart
            max_pending = page.evaluate(
                "fetch('/-/dashboard.json').then(r => r.json()).then(f => Math.max("
                "...f.history.map(s => s.pending['http.request'] || 0)))")
            assert max_pending > 0
            cells = page.locator("#workers tr", has_text="w1").inner_text().split("\t")
            assert cells[0] == "w1" and cells[4] == "idle"
            assert cells[6] == "301"  # processed: the load and the warm-up request
            assert page.locator("#verdict").inner_text() == "HEALTHY"
            assert page.locator("#channels").inner_text().count("http.request") == 1
        finally:
            browser.close()
    assert requested and all(u.startswith(base + "/-/dashboard") for u in requested)
