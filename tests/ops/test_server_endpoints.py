"""A real interface server with --metrics --health --dashboard (and --ops-port) over an
SQLite layer with a real worker: status, /metrics and the dashboard feed agree; readiness
follows the worker; the ops port keeps the application's URL space untouched."""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.ops.processes import Processes, free_port, get, status_json, wait_until


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    started = Processes(tmp_path)
    yield started
    started.stop_all()


def metric(text: bytes, name: str, **labels: str) -> float | None:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.decode().splitlines():
        match = re.fullmatch(r"([a-z_]+)(?:\{(.*)\})? (\S+)", line)
        if match and match.group(1) == name and ",".join(
                sorted((match.group(2) or "").split(","))) == (wanted or ""):
            return float(match.group(3))
    return None


@pytest.mark.slow
def test_status_metrics_and_dashboard_show_the_same_numbers(tmp_path, processes):
    """After 60 requests: switchboard status, /metrics and the dashboard feed all count 60
    http.request messages and 60 processed by the worker; /-/ready is 200 until the worker
    is killed, then 503 naming the missing worker."""
    url = f"sqlite:///{tmp_path}/layer.db"
    worker = processes.worker(url, "w1", heartbeat=1.5, ttl=4.5)  # beats every 0.3 s
    _, port = processes.server(url, "--metrics", "--health", "--dashboard",
                               "--ops-interval", "0.2")
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: get(base + "/-/ready")[0] == 200, "readiness")
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda _: get(base + "/")[0], range(60)))
    assert codes == [200] * 60
    assert get(base + "/-/health")[0] == 200

    def agreed() -> tuple[dict, bytes, dict] | None:
        code, status = status_json(url)
        metrics = get(base + "/metrics")[1]
        feed = json.loads(get(base + "/-/dashboard.json")[1])
        http = next(c for c in status["channels"] if c["name"] == "http.request")
        numbers = {
            (http["sent"], status["workers"][0]["processed"]),
            (metric(metrics, "switchboard_channel_messages_total", channel="http.request"),
             metric(metrics, "switchboard_worker_messages_total", worker="w1")),
            (next(c["sent"] for c in feed["status"]["channels"] if c["name"] == "http.request"),
             feed["status"]["workers"][0]["processed"]),
        }
        return (status, metrics, feed) if numbers == {(60, 60)} and code == 0 else None

    status, metrics, feed = wait_until(agreed, "status, /metrics and the feed to agree", 10)
    assert status["healthy"] is True and feed["status"]["healthy"] is True
    assert metric(metrics, "switchboard_http_requests_total", status="200") == 60
    assert metric(metrics, "switchboard_http_first_reply_seconds_count") == 60
    assert metric(metrics, "switchboard_channel_pending", channel="http.request") == 0
    assert metric(metrics, "switchboard_workers", state="idle") == 1
    assert feed["server"]["requests_total"] == 60
    assert sum(s["replies_measured"] for s in feed["history"]) == 60

    worker.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    found = wait_until(lambda: (lambda r: r if r[0] == 503 else None)(get(base + "/-/ready")),
                       "readiness to fail", 10)
    assert time.monotonic() - killed < 4
    assert json.loads(found[1])["worker"]["detail"] == "no live worker consumes it"


@pytest.mark.slow
def test_ops_port_serves_operations_and_leaves_the_app_port_alone(tmp_path, processes):
    """With --ops-port the operations paths answer there (404 elsewhere), while the
    application's port passes /metrics to the application."""
    url = f"sqlite:///{tmp_path}/layer.db"
    processes.worker(url, "w1")
    ops = free_port()
    _, port = processes.server(url, "--metrics", "--health", "--ops-port", str(ops))
    wait_until(lambda: get(f"http://127.0.0.1:{port}/")[0] == 200, "the application")
    assert get(f"http://127.0.0.1:{port}/metrics") == (200, b"ok")
    wait_until(lambda: _reachable(ops), "the ops port")
    status, body = get(f"http://127.0.0.1:{ops}/metrics")
    assert status == 200 and b"switchboard_http_connections" in body
    assert get(f"http://127.0.0.1:{ops}/-/ready")[0] == 200
    assert get(f"http://127.0.0.1:{ops}/")[0] == 404


def _reachable(port: int) -> bool:
    try:
        get(f"http://127.0.0.1:{port}/-/health", timeout=1)
    except OSError:
        return False
    return True
