"""Killing a worker shows up within one heartbeat interval, measured on real processes.

An interface server (``--metrics --health --dashboard``) and a ``runworker`` share an
SQLite layer, both with ``--heartbeat-interval 2``; ``switchboard status --watch --json``
runs beside them. Under a steady load nothing calls the worker stale; after SIGKILL one
thread per reader polls until it shows the worker gone: the status documents, ``/metrics``,
the dashboard feed, readiness, and the server's "no live worker" 503 for the application.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.ops.processes import Processes, get, metric, wait_until

INTERVAL = 2.0


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    started = Processes(tmp_path)
    yield started
    started.stop_all()


def _worker_stale(workers: list[dict], name: str = "w1") -> bool:
    """``True`` if ``name`` is listed as stale, or no longer listed at all."""
    return all(w["stale"] for w in workers if w["name"] == name)


def _first_time(check: Callable[[], bool], since: float, deadline: float,
                found: dict[str, float], key: str) -> None:
    """Poll ``check`` until it holds; record the seconds since ``since`` in ``found``."""
    while time.monotonic() < deadline:
        try:
            if check():
                found[key] = time.monotonic() - since
                return
        except OSError:
            pass  # a client timeout: the server still waits for the dead worker
        time.sleep(0.02)


@pytest.mark.slow
def test_a_killed_worker_is_shown_gone_within_one_heartbeat_interval(tmp_path, processes):
    """While 4 clients keep requests coming for 1.5 intervals, no status document and no
    scrape calls the worker stale. After SIGKILL, status --watch, /metrics, the dashboard
    feed, /-/ready and the application's 503 all show it gone within one interval (2 s),
    and status marks it stale, not merely missing, while its registration lasts."""
    url = f"sqlite:///{tmp_path}/layer.db"
    beat = ("--heartbeat-interval", str(INTERVAL))
    worker = processes.runworker(url, "w1", *beat, "--threads", "2")
    _, port = processes.server(url, "--metrics", "--health", "--dashboard", *beat,
                               "--http-timeout", "5")
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: get(base + "/-/ready")[0] == 200, "readiness")
    watch = processes.status_watch(url, interval=0.1)
    wait_until(lambda: (watch.latest() or {}).get("workers"), "the first status document")

    scrapes: list[bool] = []
    stop = threading.Event()

    def scrape_while_loaded() -> None:
        while not stop.is_set():
            scrapes.append(metric(get(base + "/metrics")[1], "switchboard_worker_up",
                                  worker="w1") == 1)
            time.sleep(0.05)

    scraper = threading.Thread(target=scrape_while_loaded)
    scraper.start()
    loaded_until = time.monotonic() + 1.5 * INTERVAL

    def client(_: int) -> list[int]:
        codes = []
        while time.monotonic() < loaded_until:
            codes.append(get(base + "/")[0])
        return codes

    with ThreadPoolExecutor(4) as pool:
        codes = [code for batch in pool.map(client, range(4)) for code in batch]
    stop.set()
    scraper.join()
    assert codes and set(codes) == {200}, codes
    assert scrapes and all(scrapes), "a scrape called the loaded worker stale"
    before = watch.documents()
    assert len(before) > 10
    assert not any(_worker_stale(doc["workers"]) for doc in before)
    assert not any(p["code"] == "stale-heartbeat" for doc in before for p in doc["problems"])

    worker.send_signal(signal.SIGKILL)
    killed, killed_wall = time.monotonic(), time.time()
    deadline = killed + 3 * INTERVAL
    found: dict[str, float] = {}

    def status_shows() -> bool:
        return any(doc["taken_at"] >= killed_wall and _worker_stale(doc["workers"])
                   for doc in watch.documents())

    def metrics_show() -> bool:
        body = get(base + "/metrics", timeout=1)[1]
        return metric(body, "switchboard_worker_up", worker="w1") in (0, None) \
            and metric(body, "switchboard_channel_consumers", channel="http.request") == 0

    def feed_shows() -> bool:
        status = json.loads(get(base + "/-/dashboard.json", timeout=1)[1])["status"]
        return _worker_stale(status["workers"])

    def not_ready() -> bool:
        return get(base + "/-/ready", timeout=1)[0] == 503

    def app_refused() -> bool:
        status, body = get(base + "/", timeout=0.3)
        return status == 503 and b"no worker" in body

    checks = {"status --watch": status_shows, "/metrics": metrics_show,
              "dashboard feed": feed_shows, "/-/ready": not_ready, "503": app_refused}
    pollers = [threading.Thread(target=_first_time, args=(check, killed, deadline, found, key))
               for key, check in checks.items()]
    for poller in pollers:
        poller.start()
    for poller in pollers:
        poller.join()
    print(f"detection after SIGKILL (interval {INTERVAL} s):",
          {key: round(seconds, 2) for key, seconds in sorted(found.items())})
    assert set(found) == set(checks), f"not shown within {3 * INTERVAL} s: {found}"
    for key, seconds in found.items():
        assert seconds <= INTERVAL, f"{key} took {seconds:.2f} s"
    # By the layer's clock: the first status document showing it looked at most one
    # interval after the kill, and called it stale (it is still registered).
    first = next(doc for doc in watch.documents()
                 if doc["taken_at"] >= killed_wall and _worker_stale(doc["workers"]))
    assert first["taken_at"] - killed_wall <= INTERVAL
    (listed,) = [w for w in first["workers"] if w["name"] == "w1"]
    assert listed["state"] == "stale"
    assert {(p["code"], p["subject"]) for p in first["problems"]} >= {
        ("stale-heartbeat", "w1"), ("no-workers", "")}
    assert first["healthy"] is False
