"""Slow clients against the real server: slowloris, slow bodies, slow readers.

A slow client must cost the server a bounded amount of time and memory, and
never the service of other clients:

* a head still incomplete after ``--header-timeout`` is answered 408 and
  closed (however steadily its bytes trickle in);
* a body that stops arriving for ``--body-timeout`` is answered 408; one that
  keeps arriving, however slowly, is served;
* a client that does not read a large streaming response is cut off once more
  than ``--max-output-buffer`` stays unread for a sweep (or four times that
  piles up at once), so the server's memory stays bounded (measured from
  ``/proc/<pid>/status``).

The bounded version of slowhttptest's attack runs 200 slow connections for
about 8 s while a normal client keeps measuring its latency.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import time

from interface_server._output import HARD_FACTOR
from tests.hostile import wire
from tests.hostile.conftest import BODY_TIMEOUT, HEADER_TIMEOUT, MAX_OUTPUT, SWEEP, Target

HEAD = b"GET /echo HTTP/1.1\r\nHost: test\r\nX-Padding: " + b"p" * 200 + b"\r\n\r\n"


def test_slowloris_head_gets_408_within_the_header_timeout(target: Target) -> None:
    """A head sent one byte every 0.2 s is answered 408 once --header-timeout passes,
    even though bytes keep arriving, and the connection is closed."""
    sock = wire.connect(target.port)
    began = time.monotonic()
    answer = b""
    sock.settimeout(0.2)
    for byte in HEAD:
        try:
            sock.send(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            break
        try:
            answer += sock.recv(4096)
        except TimeoutError:
            continue
        if answer:
            break
    took = time.monotonic() - began
    sock.settimeout(5)
    try:
        while chunk := sock.recv(4096):
            answer += chunk
    except ConnectionResetError:
        pass
    sock.close()
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert HEADER_TIMEOUT <= took <= HEADER_TIMEOUT + SWEEP + 1.0, took


def test_stalled_body_gets_408(target: Target) -> None:
    """A body that stops arriving halfway is answered 408 after --body-timeout."""
    raw = b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 100\r\n\r\n" + b"b" * 10
    result = wire.exchange(target.port, raw, timeout=BODY_TIMEOUT + SWEEP + 3)
    assert result.statuses == [408], result.raw[:300]
    assert b"request body" in result.responses[0].body
    assert result.closed
    assert BODY_TIMEOUT <= result.elapsed <= BODY_TIMEOUT + SWEEP + 1.0


def test_stalled_chunked_body_gets_408(target: Target) -> None:
    """A chunked body that stops in the middle of a chunk is answered 408 as well."""
    raw = (b"POST /echo HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"64\r\n" + b"c" * 10)
    result = wire.exchange(target.port, raw, timeout=BODY_TIMEOUT + SWEEP + 3)
    assert result.statuses == [408], result.raw[:300]


def test_slow_but_steady_body_is_served(target: Target) -> None:
    """A body sent in ten pieces 0.4 s apart takes longer than --body-timeout in all but
    never pauses that long: it is served whole (the timeout is per pause, not total)."""
    head = b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 10\r\nConnection: close\r\n\r\n"
    result = wire.exchange(target.port, [head] + [b"s"] * 10, expect=1, pause=0.4, timeout=10)
    assert result.elapsed > BODY_TIMEOUT
    assert result.statuses == [200], result.raw[:300]
    assert b'"body_length": 10' in result.responses[0].body


def test_200_slowloris_connections_do_not_deny_service(target: Target) -> None:
    """200 connections trickling request heads (slowhttptest's slowloris, bounded: ~8 s)
    are each answered 408 within --header-timeout plus a sweep, replaced as they close,
    while a normal client's requests keep succeeding with p99 latency under 0.5 s."""
    count, duration = 200, 8.0
    selector = selectors.DefaultSelector()
    started: dict[socket.socket, float] = {}
    answers: dict[socket.socket, bytes] = {}
    held: list[float] = []
    statuses: list[bytes] = []

    def open_one() -> None:
        sock = socket.create_connection((wire.HOST, target.port), timeout=5)
        sock.setblocking(False)
        sock.send(b"GET /echo HTTP/1.1\r\nHost: test\r\n")
        started[sock] = time.monotonic()
        answers[sock] = b""
        selector.register(sock, selectors.EVENT_READ)

    def finish(sock: socket.socket) -> None:
        selector.unregister(sock)
        held.append(time.monotonic() - started.pop(sock))
        statuses.append(answers.pop(sock)[:12])
        sock.close()

    with wire.LatencyProbe(target.port) as probe:
        for _ in range(count):
            open_one()
        ends = time.monotonic() + duration
        next_trickle = time.monotonic()
        while time.monotonic() < ends:
            for key, _ in selector.select(timeout=0.1):
                sock = key.fileobj
                try:
                    data = sock.recv(4096)
                except ConnectionResetError:
                    data = b""
                answers[sock] += data
                if not data:
                    finish(sock)
                    open_one()  # keep the pressure on, as slowhttptest does
            if time.monotonic() >= next_trickle:  # one more header byte each, every 0.5 s
                next_trickle += 0.5
                for sock in list(started):
                    with contextlib.suppress(OSError):
                        sock.send(b"X")
        for sock in list(started):
            selector.unregister(sock)
            sock.close()
    probe.check(bound=0.5)
    assert len(held) >= count, "the slow connections were not timed out"
    assert set(statuses) == {b"HTTP/1.1 408"}, set(statuses)
    assert max(held) <= HEADER_TIMEOUT + SWEEP + 1.5, max(held)


def test_slow_reader_is_cut_and_memory_stays_bounded(target: Target) -> None:
    """Four clients ask for a 128 MiB streamed response (64 KiB chunks) and never read
    it: each is cut (more than --max-output-buffer, 4 MiB, stays unread for a sweep, or
    four times that piles up), so the server's memory grows by a fraction of the 512 MiB
    they asked for; a normal request still succeeds.

    The bound allows, per client, the most it may buffer and Twisted's copy of it while
    it joins writes (2 x 16 MiB), plus one batch of replies in flight (up to 256 chunks,
    16 MiB, held up to three times while it is read, decoded and dispatched)."""
    chunks, size, clients = 2048, 65536, 4
    total = chunks * size
    before = wire.rss_kib(target.pid)
    socks = []
    for _ in range(clients):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect((wire.HOST, target.port))
        sock.sendall(b"GET /big?chunks=%d&size=%d HTTP/1.1\r\nHost: test\r\n\r\n"
                     % (chunks, size))
        socks.append(sock)
    deadline = time.monotonic() + 30
    peak = before
    while target.new_log().count("--max-output-buffer") < len(socks):
        assert time.monotonic() < deadline, "the slow readers were never cut off"
        peak = max(peak, wire.rss_kib(target.pid))
        time.sleep(0.05)
    settled = time.monotonic() + 2  # the worker still streams what nobody will read
    while time.monotonic() < settled:
        peak = max(peak, wire.rss_kib(target.pid))
        time.sleep(0.05)
    growth_mib = (peak - before) / 1024
    assert wire.get(target.port).statuses == [200]
    received = []
    for sock in socks:
        got = 0
        sock.settimeout(5)
        try:
            while chunk := sock.recv(1 << 20):
                got += len(chunk)
        except ConnectionResetError:
            pass
        received.append(got)
        sock.close()
    assert all(got < total for got in received), received
    bound_mib = (clients * 2 * HARD_FACTOR * MAX_OUTPUT + 3 * 256 * size) / 2**20 + 16
    assert growth_mib < bound_mib, f"the server grew by {growth_mib:.0f} MiB"
    assert total > MAX_OUTPUT
