"""Fixtures for the hostile-input suite: one real server and worker, checked after every test.

``target`` is a real ``interfaceserver`` process and a real ``runworker``
(``tests.hostile.app``) on a SQLite layer, started once for the session on a
free loopback port, with tight limits so that every limit is reached quickly:

=======================  =========  ======================================
option                   value      reached by
=======================  =========  ======================================
``--header-timeout``     2 s        slowloris (408)
``--body-timeout``       2 s        a stalled body (408)
``--keep-alive-timeout`` 5 s        idle connections (closed)
``--max-body-size``      1 MiB      oversize bodies (413)
``--max-ws-message-size`` 64 KiB    oversize messages (close 1009)
``--max-output-buffer``  4 MiB      clients that do not read (cut)
=======================  =========  ======================================

After each test that used it, the fixture asserts the server survived: the
process still runs, its log holds no traceback, and a normal request still
gets 200. Tests marked ``soak`` are skipped unless ``SWITCHBOARD_SOAK=1``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from asgi_spec import load_layer
from tests.e2e.processes import InterfaceServer, Stack, Worker
from tests.hostile import wire

ROUTING = "tests.hostile.app:channel_routing"
HEADER_TIMEOUT = 2.0
BODY_TIMEOUT = 2.0
KEEP_ALIVE_TIMEOUT = 5.0
MAX_BODY = 1024 * 1024
MAX_WS_MESSAGE = 64 * 1024
MAX_OUTPUT = 4 * 1024 * 1024
#: The server decides timeouts in a sweep this often: they fire at most this late.
SWEEP = 1.0
SERVER_OPTIONS = (
    "--header-timeout", str(HEADER_TIMEOUT), "--body-timeout", str(BODY_TIMEOUT),
    "--keep-alive-timeout", str(KEEP_ALIVE_TIMEOUT), "--max-body-size", str(MAX_BODY),
    "--max-ws-message-size", str(MAX_WS_MESSAGE), "--max-output-buffer", str(MAX_OUTPUT),
    "--no-access-log",
)
SOAK_ENV = "SWITCHBOARD_SOAK"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get(SOAK_ENV) == "1":
        return
    skip = pytest.mark.skip(reason=f"soak test: opt in with {SOAK_ENV}=1 (runs for minutes)")
    for item in items:
        if "soak" in item.keywords:
            item.add_marker(skip)


class HostileWorker(Worker):
    """``runworker tests.hostile.app:channel_routing``."""

    def __init__(self, name: str, layer_url: str, log_dir: Path,
                 options: tuple[str, ...] = ()) -> None:
        super().__init__(name, layer_url, log_dir, options)
        self.argv[1] = ROUTING


class Target:
    """The running server and worker under attack."""

    def __init__(self, stack: Stack, server: InterfaceServer, worker: Worker) -> None:
        self.stack = stack
        self.server = server
        self.worker = worker
        self.port = server.port
        self._log_offset = 0

    @property
    def pid(self) -> int:
        return self.server.pid

    def server_log(self) -> str:
        return self.server.stderr()

    def mark(self) -> None:
        """Remember where the server's log is, so later checks read only what follows."""
        self._log_offset = len(self.server_log())

    def new_log(self) -> str:
        return self.server_log()[self._log_offset:]

    def check_healthy(self) -> None:
        """The server process lives, logged no traceback, and still answers a normal GET."""
        assert self.server.running, f"the server died\n{self.stack.explain()}"
        assert self.worker.running, f"the worker died\n{self.stack.explain()}"
        log = self.new_log()
        for sign in ("Traceback", "Unhandled Error", "CRITICAL"):
            assert sign not in log, f"the server logged {sign!r}:\n{log[-4000:]}"
        deadline = time.monotonic() + 10
        while True:
            reply = wire.get(self.port, "/echo/health")
            if reply.statuses == [200]:
                return
            # A flood may still be draining through the worker: retry, within a bound.
            assert time.monotonic() < deadline, (
                f"a normal request no longer succeeds: {reply.raw[:300]!r}\n"
                f"{self.stack.explain()}")
            time.sleep(0.2)


@pytest.fixture(scope="session")
def hostile_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    directory = tmp_path_factory.mktemp("hostile")
    url = f"sqlite:///{directory}/layer.db"
    layer = load_layer(url)
    stack = Stack(url, directory, layer)
    try:
        server = InterfaceServer("server", url, directory, SERVER_OPTIONS)
        worker = HostileWorker("worker", url, directory, ("--threads", "4"))
        stack.processes += [server.start(), worker.start()]
        server.wait_ready()
        worker.wait_ready(layer)
        target = Target(stack, server, worker)
        target.check_healthy()
        yield target
    finally:
        stack.stop_all()
        layer.close()


@pytest.fixture
def target(hostile_stack: Target, request: pytest.FixtureRequest) -> Iterator[Target]:
    """The shared server; after the test, it must still be alive and serving."""
    hostile_stack.mark()
    yield hostile_stack
    if not _failed(request.node):
        hostile_stack.check_healthy()
    else:
        print(hostile_stack.stack.explain())


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Any:
    report = yield
    setattr(item, f"hostile_report_{report.when}", report)
    return report


def _failed(node: Any) -> bool:
    return getattr(getattr(node, "hostile_report_call", None), "failed", False)
