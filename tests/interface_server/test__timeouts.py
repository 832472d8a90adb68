"""Tests for ``interface_server._timeouts``: timeout decisions as functions of ``now``."""

from __future__ import annotations

import pytest

from interface_server._timeouts import (
    Due,
    http_connection_due,
    http_request_due,
    websocket_due,
)


@pytest.mark.parametrize(("now", "started", "due"), [
    (109.9, False, None),
    (110.0, False, Due.RESPOND_TIMEOUT),
    (150.0, True, Due.ABORT_STREAM),
    (105.0, True, None),
])
def test_http_request_due(now: float, started: bool, due: Due | None) -> None:
    """A response not started within the timeout is a 504; a silent stream is cut."""
    assert http_request_due(now, waiting_since=100.0, response_started=started,
                            timeout=10.0) is due


@pytest.mark.parametrize(("now", "head", "idle", "due"), [
    (105, 100, None, None),
    (110, 100, None, Due.HEADER_TIMEOUT),
    (104, None, 100, None),
    (105, None, 100, Due.IDLE_TIMEOUT),
    (200, None, None, None),
    (200, 195, 100, None),
])
def test_http_connection_due(now: float, head: float | None, idle: float | None,
                             due: Due | None) -> None:
    """A slow request head gets a 408; an idle keep-alive connection is closed."""
    assert http_connection_due(now, head_started_at=head, idle_since=idle, header_timeout=10,
                               keep_alive_timeout=5) is due


def ws(now: float, **changes: object) -> Due | None:
    values: dict[str, object] = {
        "handshaking": False, "connect_started_at": 0.0, "opened_at": 0.0,
        "last_received_at": 0.0, "ping_sent_at": None, "connect_timeout": 5.0,
        "lifetime": 1000.0, "ping_interval": 20.0, "ping_timeout": 30.0,
    }
    values.update(changes)
    return websocket_due(now, **values)  # type: ignore[arg-type]


def test_websocket_connect_timeout() -> None:
    """A handshake the app has not answered within the connect timeout is due."""
    assert ws(4.9, handshaking=True) is None
    assert ws(5.0, handshaking=True) is Due.CONNECT_TIMEOUT


def test_websocket_ping_after_quiet_interval() -> None:
    """A quiet socket is pinged after ping_interval; traffic postpones it."""
    assert ws(19.9) is None
    assert ws(20.0) is Due.PING
    assert ws(30.0, last_received_at=15.0) is None


def test_websocket_ping_timeout() -> None:
    """An unanswered ping past ping_timeout drops the socket."""
    assert ws(49.0, ping_sent_at=20.0) is None
    assert ws(50.0, ping_sent_at=20.0) is Due.PING_TIMEOUT


def test_websocket_lifetime() -> None:
    """A socket past --websocket-timeout expires; <= 0 means no limit."""
    assert ws(1000.0, last_received_at=1000.0) is Due.EXPIRED
    assert ws(5000.0, last_received_at=5000.0, lifetime=0) is None


def test_websocket_pings_disabled() -> None:
    """ping_interval <= 0 never pings."""
    assert ws(10_000.0, ping_interval=0, lifetime=0) is None
