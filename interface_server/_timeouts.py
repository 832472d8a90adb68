"""Timeout decisions as pure functions of ``now``.

The server runs one sweep every ``sweep_interval`` seconds over its
connections and asks these functions what, if anything, is due. They take
times (the injected reactor's ``seconds()``) and limits, and return an action
or ``None``; they never read a clock themselves, so tests decide with plain
numbers and protocol tests with ``MemoryReactorClock.advance()``.
"""

from __future__ import annotations

import enum


class Due(enum.Enum):
    """What a sweep found due for one connection or request."""

    RESPOND_TIMEOUT = "respond_timeout"  # answer 504: no response started in time
    ABORT_STREAM = "abort_stream"  # a started response went silent: cut it
    HEADER_TIMEOUT = "header_timeout"  # the request head took too long: 408
    BODY_TIMEOUT = "body_timeout"  # the request body stopped arriving: 408
    IDLE_TIMEOUT = "idle_timeout"  # an idle keep-alive connection: close it
    CONNECT_TIMEOUT = "connect_timeout"  # the app never answered websocket.connect
    EXPIRED = "expired"  # the WebSocket lived past --websocket-timeout
    PING = "ping"  # the peer has been quiet: ping it
    PING_TIMEOUT = "ping_timeout"  # no pong came back: drop it


def http_request_due(now: float, *, waiting_since: float, response_started: bool,
                     timeout: float) -> Due | None:
    """For a request awaiting its application.

    ``waiting_since`` is when the request was handed to the layer, or, once
    the response started, when its last reply arrived. Past ``timeout`` an
    unstarted response becomes a 504; a started one is cut (the status is
    already on the wire, so only closing tells the client it is incomplete).
    """
    if now - waiting_since < timeout:
        return None
    return Due.ABORT_STREAM if response_started else Due.RESPOND_TIMEOUT


def http_connection_due(now: float, *, head_started_at: float | None,
                        idle_since: float | None, header_timeout: float,
                        keep_alive_timeout: float, body_received_at: float | None = None,
                        body_timeout: float = float("inf")) -> Due | None:
    """For an HTTP connection between requests.

    ``head_started_at``: when the first byte of a still-incomplete request head
    arrived (None if none is in progress). ``idle_since``: when the connection
    last became idle with nothing in progress (None while busy).
    ``body_received_at``: while a request body is being read, when its last
    bytes (or its head) arrived; a body that stalls for ``body_timeout`` is due.
    """
    if head_started_at is not None and now - head_started_at >= header_timeout:
        return Due.HEADER_TIMEOUT
    if body_received_at is not None and now - body_received_at >= body_timeout:
        return Due.BODY_TIMEOUT
    if head_started_at is None and idle_since is not None and \
            now - idle_since >= keep_alive_timeout:
        return Due.IDLE_TIMEOUT
    return None


def websocket_due(now: float, *, handshaking: bool, connect_started_at: float,
                  opened_at: float | None, last_received_at: float,
                  ping_sent_at: float | None, connect_timeout: float,
                  lifetime: float, ping_interval: float, ping_timeout: float) -> Due | None:
    """For a WebSocket, handshaking or open.

    ``lifetime`` and ``ping_interval`` <= 0 switch those checks off. A ping is
    sent after ``ping_interval`` seconds without any frame from the peer; if
    no pong (or any other frame) follows within ``ping_timeout``, it is dropped.
    """
    if handshaking:
        if now - connect_started_at >= connect_timeout:
            return Due.CONNECT_TIMEOUT
        return None
    if lifetime > 0 and opened_at is not None and now - opened_at >= lifetime:
        return Due.EXPIRED
    if ping_sent_at is not None:
        return Due.PING_TIMEOUT if now - ping_sent_at >= ping_timeout else None
    if ping_interval > 0 and now - last_received_at >= ping_interval:
        return Due.PING
    return None
