"""Tests for ``asgi_spec.registry``: the pure reading of worker registrations (and the
supervisor removing a dead child's registration)."""

from __future__ import annotations

import pytest

from asgi_spec.registry import (
    HEARTBEAT_INTERVAL,
    HEARTBEAT_TTL,
    KIND_WORKER,
    consumes,
    fresh_processes,
    has_registry,
    live_consumers,
)
from asgi_spec.testing import FakeClock
from tests.worker.helpers import memory_layer
from worker.supervisor import Supervisor, registry_cleaner


@pytest.mark.parametrize(("info", "expected"), [
    ({"channels": ["http.request", "websocket.connect"]}, True),
    ({"channels": ("http.request",)}, True),
    ({"channels": ["websocket.connect"]}, False),
    ({"channels": "http.request"}, False),
    ({"channels": ["http.*"]}, True),
    ({}, True),
    (None, False),
    (["http.request"], False),
])
def test_consumes_reads_the_channel_list_defensively(info, expected):
    """consumes() matches names and globs; no channel list means all; malformed means none."""
    assert consumes(info, "http.request") is expected


def test_ttl_allows_missed_heartbeats():
    """A registration outlives a few missed heartbeats."""
    assert HEARTBEAT_TTL >= 3 * HEARTBEAT_INTERVAL


def test_live_consumers_filters_by_channel_and_expiry():
    """live_consumers lists live workers consuming the channel, not expired or other ones."""
    layer = memory_layer()
    layer.register_process(KIND_WORKER, "a", {"channels": ["http.request"]}, 10)
    layer.register_process(KIND_WORKER, "b", {"channels": ["jobs"]}, 10)
    layer.register_process(KIND_WORKER, "c", {"channels": ["http.request"]}, 1)
    layer.register_process("server", "s", {"channels": ["http.request"]}, 10)
    layer.clock.advance(2)
    assert list(live_consumers(layer, "http.request")) == ["a"]


def test_layer_without_registry_is_reported():
    """A layer without the registry extension is detected, and live_consumers refuses."""
    class Bare:
        extensions = ["groups"]

    assert has_registry(memory_layer()) and not has_registry(Bare())
    with pytest.raises(NotImplementedError, match="registry"):
        live_consumers(Bare(), "http.request")


def test_live_consumers_leave_out_workers_whose_heartbeat_is_stale():
    """A registered worker that missed its heartbeats (older than 0.6 of its interval) is
    not a live consumer, though its registration has not expired yet; a worker that
    publishes no heartbeat time is judged by its registration alone."""
    layer = memory_layer()
    now = layer.clock()
    layer.register_process(KIND_WORKER, "fresh", {"channels": ["http.request"],
                                                  "heartbeat_at": now - 2.9,
                                                  "heartbeat_interval": 5.0}, 15)
    layer.register_process(KIND_WORKER, "killed", {"channels": ["http.request"],
                                                   "heartbeat_at": now - 3.1,
                                                   "heartbeat_interval": 5.0}, 15)
    layer.register_process(KIND_WORKER, "old", {"channels": ["http.request"]}, 15)
    assert sorted(live_consumers(layer, "http.request")) == ["fresh", "old"]
    assert sorted(fresh_processes(layer, KIND_WORKER)) == ["fresh", "old"]
    assert sorted(layer.live_processes(KIND_WORKER)) == ["fresh", "killed", "old"]


class _Child:
    """A supervised child whose death the test decides."""

    def __init__(self, pid):
        self.pid = pid
        self.code = None

    def poll(self):
        return self.code


class _Unclosable:
    """The test's memory layer, handed out to the cleaner, which closes it after each use."""

    def __init__(self, layer):
        self.layer = layer
        self.closed = 0

    def __getattr__(self, name):
        return getattr(self.layer, name)

    def close(self):
        self.closed += 1


def test_supervisor_unregisters_a_dead_child_at_once():
    """When a supervised child dies, the supervisor's next poll removes that child's
    registration (this host, its pid) instead of leaving it for its heartbeat to go stale;
    the other children's and other hosts' entries stay, and the child is restarted later."""
    layer = memory_layer()
    for name, pid, host in (("sup-1", 101, "h1"), ("sup-2", 102, "h1"),
                            ("elsewhere", 101, "h2")):
        layer.register_process(KIND_WORKER, name, {"pid": pid, "host": host}, 15)
    opened = _Unclosable(layer)
    children = iter([_Child(101), _Child(102), _Child(103)])
    supervisor = Supervisor([["a"], ["b"]], spawn=lambda command: next(children),
                            clock=FakeClock(0), on_exit=registry_cleaner(lambda: opened, "h1"))
    supervisor.start()
    supervisor.slots[0].process.code = -9  # SIGKILL
    supervisor.poll_once()
    assert sorted(layer.live_processes(KIND_WORKER)) == ["elsewhere", "sup-2"]
    assert opened.closed == 1
    assert supervisor.slots[0].restart_at is not None  # restarted after its backoff


def test_a_failing_cleaner_is_logged_not_raised(caplog):
    """If the registry cannot be reached when a child dies, the supervisor logs it and
    carries on (the entry then goes stale on its own)."""
    def down(pid):
        raise ConnectionError("layer down")

    supervisor = Supervisor([["a"]], spawn=lambda command: _Child(7), clock=FakeClock(0),
                            on_exit=down)
    supervisor.start()
    supervisor.slots[0].process.code = 1
    supervisor.poll_once()
    assert "could not unregister dead worker process 1 (pid 7)" in caplog.text
