"""The full slow-client attack: Debian's slowhttptest, 1,000 connections for up to 60 s.

Opt-in (``SWITCHBOARD_SOAK=1``; marked ``soak``): each mode takes a minute.
The bounded version of the same attacks runs by default in
``test_slow_clients.py``. Needs the ``slowhttptest`` command (Debian/Ubuntu:
``apt-get install slowhttptest``); when opted in without it, the test fails
saying so.

The server runs with its default timeouts (20 s for heads, bodies and idle
connections) and ``--max-output-buffer 256K``. For each mode -- slowloris
(``-H``), slow body (``-B``) and slow read (``-X``) -- slowhttptest must
report the service available every second, a normal client's requests must
all succeed with p99 latency under a second (in slow-read mode, whose 1,000
requests for 512 KiB each are real work for the worker, up to 5% may be shed
with 503 "channel is full", the designed backpressure), and the server must
stay within a memory bound and serve normally afterwards.
"""

from __future__ import annotations

import csv
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from asgi_spec import load_layer
from tests.e2e.processes import InterfaceServer, Stack
from tests.hostile import wire
from tests.hostile.conftest import HostileWorker, Target

pytestmark = pytest.mark.soak

CONNECTIONS = 1000
DURATION = 60
OUTPUT_LIMIT = 256 * 1024
MODES = {
    "slowloris": ["-H", "-i", "5", "-r", "200"],
    "slow-body": ["-B", "-i", "5", "-r", "200", "-s", "8192"],
    "slow-read": ["-X", "-r", "200", "-k", "1", "-n", "5", "-w", "1", "-y", "512", "-z", "32"],
}
PATHS = {"slowloris": "/echo", "slow-body": "/echo", "slow-read": "/big?chunks=8&size=65536"}


@pytest.fixture(scope="module")
def soak_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """A server with default timeouts and a small output limit, and a 4-thread worker."""
    directory = tmp_path_factory.mktemp("soak")
    url = f"sqlite:///{directory}/layer.db"
    layer = load_layer(url)
    stack = Stack(url, directory, layer)
    try:
        server = InterfaceServer("server", url, directory,
                                 ("--no-access-log", "--max-output-buffer", str(OUTPUT_LIMIT)))
        worker = HostileWorker("worker", url, directory, ("--threads", "4"))
        stack.processes += [server.start(), worker.start()]
        server.wait_ready()
        worker.wait_ready(layer)
        yield Target(stack, server, worker)
    finally:
        stack.stop_all()
        layer.close()


@pytest.mark.parametrize("mode", sorted(MODES))
def test_slowhttptest_does_not_deny_service(soak_target: Target, mode: str,
                                            tmp_path: Path) -> None:
    """1,000 slow connections (slowhttptest ``mode``) for up to 60 s: the service stays
    available every second, normal requests keep p99 under 1 s, memory stays bounded."""
    tool = shutil.which("slowhttptest")
    if tool is None:
        pytest.fail("SWITCHBOARD_SOAK=1 needs the slowhttptest command "
                    "(apt-get install slowhttptest)", pytrace=False)
    soak_target.mark()
    before = wire.rss_kib(soak_target.pid)
    report = tmp_path / mode
    argv = [tool, *MODES[mode], "-c", str(CONNECTIONS), "-l", str(DURATION), "-p", "3", "-g",
            "-o", str(report), "-u", f"http://127.0.0.1:{soak_target.port}{PATHS[mode]}"]
    peak = before
    with wire.LatencyProbe(soak_target.port) as probe:
        attack = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + DURATION + 60
        while attack.poll() is None:
            peak = max(peak, wire.rss_kib(soak_target.pid))
            if time.monotonic() > deadline:
                attack.kill()
                pytest.fail(f"slowhttptest did not end within {DURATION + 60} s")
            time.sleep(0.5)
        output = attack.stdout.read().decode(errors="replace") if attack.stdout else ""
    print(output[-2000:])
    with (report.with_suffix(".csv")).open() as stats:
        rows = list(csv.DictReader(stats))
    assert rows, "slowhttptest wrote no statistics"
    assert max(int(row["Connected"]) for row in rows) >= CONNECTIONS // 2, rows[-3:]
    unavailable = [row["Seconds"] for row in rows if int(row["Service Available"]) == 0]
    assert not unavailable, f"service unavailable at seconds {unavailable}"
    assert "service available:\x1b[1;32m   \x1b[1;31mNO" not in output
    probe.check(bound=1.0, shed_allowed=0.05 if mode == "slow-read" else 0.0)
    growth_mib = (peak - before) / 1024
    assert growth_mib < 512, f"the server grew by {growth_mib:.0f} MiB"
    soak_target.check_healthy()
