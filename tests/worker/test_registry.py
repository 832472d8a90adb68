"""Tests for ``asgi_spec.registry``: the pure reading of worker registrations."""

from __future__ import annotations

import pytest

from asgi_spec.registry import (
    HEARTBEAT_INTERVAL,
    HEARTBEAT_TTL,
    KIND_WORKER,
    consumes,
    has_registry,
    live_consumers,
)
from tests.worker.helpers import memory_layer


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
