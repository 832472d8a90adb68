"""What an interface server publishes in its registry heartbeat, for ``switchboard status``."""

from __future__ import annotations

from typing import Any

from asgi_spec.ops import snapshot
from interface_server.config import ServerConfig

GET = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"


def test_heartbeat_counts_connections_requests_and_websockets(harness: Any) -> None:
    """The info holds open HTTP connections, requests in flight, WebSockets, the start and
    heartbeat times (the layer's clock) and the interval; a snapshot reads them back."""
    h = harness(config=ServerConfig(heartbeat_interval=5))
    first, second = h.connect(), h.connect(("10.0.0.8", 4000))
    first.send(GET)  # in flight: no worker answers in this test
    second.take()
    h.layer_clock.advance(7)
    h.advance(5)
    info = h.layer.live_processes("interfaceserver")["test"]
    assert (info["http_connections"], info["http_requests_in_flight"], info["websockets"]) == \
        (2, 1, 0)
    assert info["heartbeat_at"] == h.layer_clock() and info["heartbeat_interval"] == 5
    assert info["started_at"] == h.layer_clock() - 7
    assert info["stats"]["messages_sent"] == 1
    (server,) = snapshot(h.layer).servers
    assert (server.http_connections, server.requests_in_flight, server.websockets) == (2, 1, 0)
    assert server.uptime(h.layer_clock()) == 7
