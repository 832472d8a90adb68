"""Hostile WebSocket frames against the real server (RFC 6455), over raw sockets.

A violation is answered with a close frame carrying the right code -- 1002
protocol error, 1007 invalid payload, 1009 too big -- before the TCP
connection closes: never a silent drop or a reset. Empty messages are
messages. A ping flood is answered without starving other clients, and a
flood whose sender never reads its pongs is cut off.
"""

from __future__ import annotations

import socket
import struct
import threading
import time

import pytest

from interface_server._output import HARD_FACTOR
from tests.hostile import wire
from tests.hostile.conftest import MAX_OUTPUT, MAX_WS_MESSAGE, Target
from tests.hostile.wire import BINARY, CLOSE, PING, PONG, TEXT, frame


def test_empty_messages_are_delivered(target: Target) -> None:
    """Empty text and binary messages (and an empty fragmented one) reach the application:
    the echo consumer sends each back (in any order: the worker runs 4 threads)."""
    ws = wire.WebSocket(target.port)
    ws.send(frame(TEXT) + frame(BINARY) + frame(TEXT, fin=False) + frame(0) + frame(TEXT, b"end"))
    got = [ws.receive() for _ in range(4)]
    assert sorted(got) == sorted([(TEXT, b""), (BINARY, b""), (TEXT, b""), (TEXT, b"end")])
    ws.close()


def test_message_at_the_limit_is_delivered(target: Target) -> None:
    """A message of exactly --max-ws-message-size bytes is delivered (and echoed)."""
    ws = wire.WebSocket(target.port)
    ws.send(frame(BINARY, b"m" * MAX_WS_MESSAGE))
    assert ws.receive() == (BINARY, b"m" * MAX_WS_MESSAGE)
    ws.close()


@pytest.mark.parametrize("frames", [
    [frame(BINARY, b"x" * (MAX_WS_MESSAGE + 1))],
    [frame(BINARY, length=2**40)],  # only the header: the declared size is enough
    [frame(BINARY, b"x" * 40_000, fin=False), frame(0, b"x" * 40_000)],
    [frame(TEXT, b"a" * 1000, fin=False)] + [frame(0, b"a" * 1000, fin=False)] * 65,
], ids=["one-frame", "declared-2**40", "two-fragments", "many-small-fragments"])
def test_oversize_message_closes_1009(target: Target, frames: list[bytes]) -> None:
    """A message over the limit, whole or in fragments, gets a close frame with 1009
    (not a TCP drop), and nothing of it is echoed."""
    ws = wire.WebSocket(target.port)
    try:
        for data in frames:
            ws.send(data)
    except (BrokenPipeError, ConnectionResetError):
        pass  # it closed before we finished: the close frame is still to be read
    assert ws.close_code() == 1009
    ws.close()


INVALID = [
    ("invalid-utf8", [frame(TEXT, b"\xff\xfe")], 1007),
    ("invalid-utf8-across-fragments", [frame(TEXT, b"\xce", fin=False), frame(0, b"\xff")], 1007),
    ("utf8-surrogate", [frame(TEXT, b"x" + b"\xed\xa0\x80")], 1007),
    ("unmasked", [frame(TEXT, b"hi", masked=False)], 1002),
    *[(f"reserved-opcode-{op}", [frame(op, b"hi")], 1002) for op in (3, 4, 5, 6, 7)],
    *[(f"reserved-opcode-{op}", [frame(op, b"hi")], 1002) for op in (11, 12, 13, 14, 15)],
    *[(f"rsv-{rsv}", [frame(TEXT, b"hi", rsv=rsv)], 1002) for rsv in (1, 2, 4, 7)],
    ("ping-over-125", [frame(PING, b"p" * 126)], 1002),
    ("pong-over-125", [frame(PONG, b"p" * 200)], 1002),
    ("close-over-125", [frame(CLOSE, wire.close_payload(1000, b"r" * 124))], 1002),
    ("fragmented-ping", [frame(PING, b"p", fin=False)], 1002),
    ("continuation-first", [frame(0, b"x")], 1002),
    ("new-message-inside-fragmented", [frame(TEXT, b"a", fin=False), frame(TEXT, b"b")], 1002),
    ("close-one-byte", [frame(CLOSE, b"\x03")], 1002),
    ("close-code-999", [frame(CLOSE, wire.close_payload(999))], 1002),
    ("close-code-1005", [frame(CLOSE, wire.close_payload(1005))], 1002),
    ("close-code-1006", [frame(CLOSE, wire.close_payload(1006))], 1002),
    ("close-code-5000", [frame(CLOSE, wire.close_payload(5000))], 1002),
    ("close-reason-not-utf8", [frame(CLOSE, wire.close_payload(1000, b"\xff"))], 1007),
]


@pytest.mark.parametrize(("frames", "code"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_violation_is_closed_with_its_code(target: Target, frames: list[bytes], code: int) -> None:
    """Each violation gets a close frame with the RFC 6455 code, then the server closes
    the TCP connection cleanly (no reset that would lose the close frame)."""
    ws = wire.WebSocket(target.port)
    for data in frames:
        ws.send(data)
    assert ws.close_code() == code
    ws.send(frame(CLOSE, wire.close_payload(code)))  # complete the closing handshake
    assert ws.wait_eof(5)
    assert not ws.reset
    ws.close()


def test_valid_close_codes_are_echoed_and_closed_cleanly(target: Target) -> None:
    """A client close with a valid code (1000, 3000, 4999) is answered with a close
    frame and a clean TCP close."""
    for code in (1000, 3000, 4999):
        ws = wire.WebSocket(target.port)
        ws.send(frame(CLOSE, wire.close_payload(code, b"bye")))
        assert ws.close_code() in (code, 1000)
        assert ws.wait_eof(5) and not ws.reset
        ws.close()


def test_ping_is_answered_with_its_payload_between_fragments(target: Target) -> None:
    """A ping inside a fragmented message is answered at once with the same payload, and
    the message still arrives whole."""
    ws = wire.WebSocket(target.port)
    ws.send(frame(TEXT, b"ab", fin=False) + frame(PING, b"p" * 125) + frame(0, b"cd"))
    assert ws.receive() == (PONG, b"p" * 125)
    assert ws.receive() == (TEXT, b"abcd")
    ws.close()


def echo_latencies(port: int, stop: threading.Event, out: list[float]) -> None:
    ws = wire.WebSocket(port)
    try:
        while not stop.is_set():
            began = time.monotonic()
            ws.send(frame(TEXT, b"probe"))
            while ws.receive(10) != (TEXT, b"probe"):
                pass
            out.append(time.monotonic() - began)
            time.sleep(0.02)
    finally:
        ws.close()


def test_ping_flood_is_answered_and_others_keep_being_served(target: Target) -> None:
    """Pings sent as fast as possible for 3 s (and read) are all answered with pongs,
    while another client's echo round trips keep working with bounded latency."""
    stop, latencies = threading.Event(), []
    prober = threading.Thread(target=echo_latencies, args=(target.port, stop, latencies))
    prober.start()
    try:
        ws = wire.WebSocket(target.port)
        sent, pongs, done = 0, 0, threading.Event()

        def read_pongs() -> None:
            nonlocal pongs
            while not (done.is_set() and pongs == sent):
                received = ws.receive(15)
                assert received is not None and received[0] == PONG
                pongs += 1

        reader = threading.Thread(target=read_pongs)
        reader.start()
        ping = frame(PING, b"f" * 16)
        flood_ends = time.monotonic() + 3
        while time.monotonic() < flood_ends:
            ws.send(ping * 100)
            sent += 100
        done.set()
        reader.join(30)
        assert sent >= 10_000
        assert pongs == sent
        ws.close()
    finally:
        stop.set()
        prober.join(15)
    assert len(latencies) >= 10
    assert max(latencies) < 2.0, f"echo latency under the flood: max {max(latencies):.2f} s"


def test_ping_flood_that_never_reads_is_cut_off(target: Target) -> None:
    """A client that floods pings and never reads the pongs is disconnected once more
    than --max-output-buffer of pongs stays unread for a sweep (or four times that piles
    up); the server's memory stays bounded."""
    before = wire.rss_kib(target.pid)
    ws = wire.WebSocket(target.port)
    ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    ping = frame(PING, b"f" * 125)
    sent, cut = 0, False
    deadline = time.monotonic() + 30
    ws.sock.settimeout(5)
    while time.monotonic() < deadline and sent < 3 * MAX_OUTPUT:
        try:
            ws.sock.sendall(ping * 500)
        except (BrokenPipeError, ConnectionResetError):
            cut = True
            break
        sent += len(ping) * 500
    if not cut:  # everything was sent: the cut shows when we finally read
        ws.sock.settimeout(10)
        try:
            while ws.sock.recv(1 << 20):
                pass
            cut = True
        except ConnectionResetError:
            cut = True
        except TimeoutError:
            cut = False
    ws.close()
    assert cut, f"still connected after {sent} bytes of pings"
    growth_mib = (wire.rss_kib(target.pid) - before) / 1024
    bound_mib = 2 * HARD_FACTOR * MAX_OUTPUT / 2**20
    assert growth_mib < bound_mib, f"the server grew by {growth_mib:.0f} MiB"
    assert "--max-output-buffer" in target.new_log()


def test_masked_frames_with_every_payload_length_encoding(target: Target) -> None:
    """Payload lengths at the 7-bit, 16-bit and 64-bit encoding boundaries round-trip."""
    ws = wire.WebSocket(target.port)
    for size in (0, 125, 126, 127, 65535, 65536):
        payload = bytes(i % 251 for i in range(size))
        ws.send(frame(BINARY, payload))
        assert ws.receive() == (BINARY, payload)
    ws.close()


def test_non_minimal_length_encoding_closes_1002(target: Target) -> None:
    """A 5-byte payload with its length in the 16-bit form breaks RFC 6455 5.2 ("the
    minimal number of bytes MUST be used"): close 1002."""
    ws = wire.WebSocket(target.port)
    key = b"\x01\x02\x03\x04"
    payload = b"hello"
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    ws.send(bytes([0x80 | TEXT, 0x80 | 126]) + struct.pack("!H", 5) + key + masked)
    assert ws.close_code() == 1002
    ws.close()


UPGRADE = (b"GET /ws/echo/ HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\n"
           b"Connection: Upgrade\r\n")
KEY = b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
V13 = b"Sec-WebSocket-Version: 13\r\n"


@pytest.mark.parametrize(("raw", "words"), [
    (UPGRADE + V13 + b"\r\n", b"Sec-WebSocket-Key header missing"),
    (UPGRADE + V13 + b"Sec-WebSocket-Key: short\r\n\r\n", b"Sec-WebSocket-Key"),
    (UPGRADE + V13 + KEY + KEY + b"\r\n", b"more than once"),
    (UPGRADE + KEY + b"Sec-WebSocket-Version: 99\r\n\r\n", b"not supported"),
    (UPGRADE.replace(b"Connection: Upgrade\r\n", b"") + V13 + KEY + b"\r\n",
     b"Connection header missing"),
], ids=["no-key", "short-key", "two-keys", "version-99", "no-connection-upgrade"])
def test_bad_handshakes_are_400_with_a_reason(target: Target, raw: bytes, words: bytes) -> None:
    """A broken opening handshake gets 400 saying what is wrong, then a close (and an
    unsupported version names the supported ones in Sec-WebSocket-Version)."""
    result = wire.exchange(target.port, raw, timeout=5)
    assert result.statuses == [400], result.raw[:300]
    assert words in result.responses[0].body
    assert result.closed
    if b"99" in raw:
        assert result.responses[0].header("sec-websocket-version") == "13,8"


def test_upgrade_in_http_10_is_an_ordinary_request(target: Target) -> None:
    """Upgrade means nothing in HTTP/1.0: the request is served as plain HTTP (the echo
    application answers it), no WebSocket is opened."""
    raw = (UPGRADE + V13 + KEY + b"\r\n").replace(b"/ws/echo/ HTTP/1.1", b"/echo/ws HTTP/1.0")
    result = wire.exchange(target.port, raw, expect=1, timeout=5)
    assert result.statuses == [200], result.raw[:300]
    assert b'"path": "/echo/ws"' in result.responses[0].body
