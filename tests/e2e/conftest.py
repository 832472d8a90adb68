"""Fixtures for the end-to-end tests: a layer URL per backend, and stacks of real processes.

* ``layer_url`` is parametrized over the SQLite layer (a file under the test's
  ``tmp_path``) and the session's private Redis (``redis_url`` from
  ``tests/conftest.py``) with a key prefix of its own, so tests never see
  each other's messages, groups or registry entries.
* ``stack`` is a ``processes.Stack`` for one test; ``app`` is one interface
  server plus one two-thread worker shared by a module's tests, per backend.
  Both stop their processes by PID at teardown and, when a test failed,
  print every process's output (pytest shows it under the failure).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from asgi_spec import load_layer
from tests.e2e.processes import InterfaceServer, Stack

BACKENDS = ["sqlite", "redis"]


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Any:
    report = yield
    setattr(item, f"e2e_report_{report.when}", report)
    return report


def _failed(node: Any) -> bool:
    return any(getattr(getattr(node, f"e2e_report_{when}", None), "failed", False)
               for when in ("setup", "call"))


def make_layer_url(backend: str, directory: Path, request: pytest.FixtureRequest) -> str:
    if backend == "sqlite":
        return f"sqlite:///{directory}/layer.db"
    redis_url = request.getfixturevalue("redis_url")
    return f"{redis_url}?prefix=e2e-{uuid.uuid4().hex[:12]}:"


@pytest.fixture(params=BACKENDS)
def layer_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return make_layer_url(request.param, tmp_path, request)


@pytest.fixture
def layer(layer_url: str) -> Iterator[Any]:
    """The test process's own connection to the layer the processes use."""
    layer = load_layer(layer_url)
    yield layer
    layer.close()


@pytest.fixture
def stack(layer_url: str, layer: Any, tmp_path: Path,
          request: pytest.FixtureRequest) -> Iterator[Stack]:
    stack = Stack(layer_url, tmp_path, layer)
    yield stack
    stack.stop_all()
    if _failed(request.node):
        print(stack.explain())


class App:
    """One running interface server and worker (``tests.e2e.app``) on one layer."""

    def __init__(self, stack: Stack, server: InterfaceServer) -> None:
        self.stack = stack
        self.server = server
        self.layer = stack.layer
        self.port = server.port

    def explain(self) -> str:
        return self.stack.explain()


@pytest.fixture(scope="module", params=BACKENDS)
def shared_app(request: pytest.FixtureRequest,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    directory = tmp_path_factory.mktemp(f"e2e-{request.param}")
    url = make_layer_url(request.param, directory, request)
    layer = load_layer(url)
    stack = Stack(url, directory, layer)
    try:
        server = stack.server(wait=False)  # both start at once, then both are waited for
        worker = stack.worker("--threads", "2", wait=False)
        server.wait_ready()
        worker.wait_ready(layer)
        yield App(stack, server)
    finally:
        stack.stop_all()
        layer.close()


@pytest.fixture
def app(shared_app: App, request: pytest.FixtureRequest) -> Iterator[App]:
    """The module's shared server and worker; their output is printed if the test fails."""
    for process in shared_app.stack.processes:
        process.check_alive()
    yield shared_app
    if _failed(request.node):
        print(shared_app.explain())
