"""Connection floods against the real server: bursts of connects, idle and busy.

The listen backlog (2048 by default, not Twisted's 50) absorbs a burst of
thousands of connects; each one is then answered, or refused cleanly (an
error at connect time), never left hanging. Connections that connect and say
nothing are closed by the keep-alive timeout, so they cannot pile up.
"""

from __future__ import annotations

import selectors
import socket
import time

from tests.hostile import wire
from tests.hostile.conftest import KEEP_ALIVE_TIMEOUT, SWEEP, Target

REQUEST = b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"


def flood(port: int, count: int, deadline: float) -> tuple[dict[str, int], float]:
    """Open ``count`` connections at once, send one request on each, read each answer.

    Returns how each ended (``answered`` 200, ``shed`` with 503 because the layer's
    queue was full, ``refused`` at connect, ``reset``, ``hung``, ``other``) and how long
    the whole burst took.
    """
    began = time.monotonic()
    selector = selectors.DefaultSelector()
    outcome = {"answered": 0, "shed": 0, "refused": 0, "reset": 0, "hung": 0, "other": 0}
    buffers: dict[socket.socket, bytes] = {}
    for _ in range(count):
        sock = socket.socket()
        sock.setblocking(False)
        error = sock.connect_ex((wire.HOST, port))
        if error not in (0, 115):  # EINPROGRESS
            outcome["refused"] += 1
            sock.close()
            continue
        buffers[sock] = b""
        selector.register(sock, selectors.EVENT_WRITE)
    end = began + deadline
    while buffers and time.monotonic() < end:
        for key, events in selector.select(timeout=0.2):
            sock = key.fileobj
            if events & selectors.EVENT_WRITE:
                error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if error:
                    outcome["refused"] += 1
                    selector.unregister(sock)
                    del buffers[sock]
                    sock.close()
                    continue
                sock.send(REQUEST)
                selector.modify(sock, selectors.EVENT_READ)
                continue
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                data, outcome["reset"] = b"", outcome["reset"] + 1
            if data:
                buffers[sock] += data
                continue
            received = buffers.pop(sock)
            if received.startswith(b"HTTP/1.1 200 ") and received.endswith(b"hello"):
                outcome["answered"] += 1
            elif received.startswith(b"HTTP/1.1 503 ") and b"channel is full" in received:
                outcome["shed"] += 1  # backpressure: the layer's http.request queue is full
            elif received:
                outcome["other"] += 1
                print("unexpected answer:", received[:200])
            selector.unregister(sock)
            sock.close()
    outcome["hung"] = len(buffers)
    for sock in buffers:
        sock.close()
    selector.close()
    return outcome, time.monotonic() - began


def test_burst_of_3000_connects_is_answered(target: Target) -> None:
    """3,000 connects at once, each with a request: every one is answered -- 200, or 503
    when the layer's http.request queue is full (the designed backpressure) -- or refused
    cleanly at connect time; none hangs or is reset, and the burst is over within 30 s."""
    outcome, took = flood(target.port, 3000, deadline=30)
    assert outcome["hung"] == 0, outcome
    assert outcome["other"] == 0 and outcome["reset"] == 0, outcome
    assert outcome["answered"] + outcome["shed"] + outcome["refused"] == 3000, outcome
    assert outcome["answered"] >= 100, outcome  # the workers served all they could
    assert took < 30


def test_idle_connection_flood_is_closed_by_the_keep_alive_timeout(target: Target) -> None:
    """1,000 connections that connect and never send a byte are all closed by the server
    within --keep-alive-timeout plus a sweep, and a normal request is served meanwhile."""
    socks = [socket.create_connection((wire.HOST, target.port), timeout=5)
             for _ in range(1000)]
    opened = time.monotonic()
    assert wire.get(target.port).statuses == [200]
    selector = selectors.DefaultSelector()
    for sock in socks:
        selector.register(sock, selectors.EVENT_READ)
    closed = 0
    deadline = opened + KEEP_ALIVE_TIMEOUT + SWEEP + 3
    while closed < len(socks) and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=0.2):
            try:
                data = key.fileobj.recv(4096)
            except ConnectionResetError:
                data = b""
            assert data == b"", f"an idle connection was sent {data[:80]!r}"
            selector.unregister(key.fileobj)
            closed += 1
    took = time.monotonic() - opened
    for sock in socks:
        sock.close()
    assert closed == len(socks), f"{len(socks) - closed} idle connections still open"
    assert took >= KEEP_ALIVE_TIMEOUT - 0.5, f"closed after only {took:.1f} s"


def test_many_pipelined_requests_on_one_connection(target: Target) -> None:
    """500 pipelined requests in one burst on one connection are all answered, in order,
    with the server reading ahead only a bounded amount while it works."""
    raw = b"".join(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n" for _ in range(500))
    result = wire.exchange(target.port, raw, expect=500, timeout=30)
    assert result.statuses == [200] * 500
