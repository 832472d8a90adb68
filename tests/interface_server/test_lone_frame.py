"""The WebSocket fast path for a read that is one whole small message
(``_frame_mask.lone_frame``, ``SwitchboardWebSocketProtocol._lone_message``): whatever
frames arrive, in whatever reads, a server with it does exactly what one without it
does, and the fast path is taken for the common read."""

from __future__ import annotations

import struct
from typing import Any

import pytest
import txaio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from interface_server import _frame_mask
from interface_server.config import ServerConfig
from tests.interface_server.conftest import Harness, client_frame, handshake

MASK = b"\x9a\x01\xff\x40"


def frame(opcode: int, payload: bytes, *, fin: bool = True, masked: bool = True,
          rsv: int = 0) -> bytes:
    """A client frame with any header bits (``client_frame`` plus RSV and unmasked)."""
    data = bytearray(client_frame(opcode, payload, fin=fin, mask=MASK))
    data[0] |= rsv << 4
    if not masked:
        start = data.index(MASK)
        data[1] &= 0x7F
        data[start:] = payload
    return bytes(data)


TEXTS = st.text(max_size=40) | st.text(min_size=120, max_size=140)
FRAMES = st.one_of(
    st.builds(lambda t: frame(1, t.encode()), TEXTS),  # the common ones, twice as often
    st.builds(lambda t: frame(1, t.encode()), TEXTS),
    st.builds(lambda b: frame(2, b), st.binary(max_size=130)),
    st.builds(lambda b: frame(2, b), st.binary(max_size=130)),
    st.builds(lambda b: frame(1, b), st.sampled_from(
        [b"\xff", b"a\xc3", b"\xed\xa0\x80", b"\xc0\xaf", b"ok\xf4\x90\x80\x80"])),
    st.builds(lambda t: frame(1, t.encode(), fin=False) + frame(0, b"-end"), TEXTS),
    st.builds(lambda t: frame(1, t.encode(), fin=False), TEXTS),  # left unfinished
    st.builds(lambda b: frame(0, b), st.binary(max_size=8)),  # a stray continuation
    st.builds(lambda b: frame(9, b), st.binary(max_size=8)),  # ping
    st.builds(lambda b: frame(10, b), st.binary(max_size=8)),  # pong
    st.just(frame(8, struct.pack("!H", 1000) + b"bye")),
    st.builds(lambda b, r: frame(2, b, rsv=r), st.binary(max_size=8), st.integers(1, 7)),
    st.builds(lambda b: frame(2, b, masked=False), st.binary(max_size=8)),
    st.builds(lambda b, op: frame(op, b), st.binary(max_size=8), st.sampled_from([3, 7, 11])),
)


@st.composite
def reads(draw: Any) -> list[bytes]:
    """Frames cut into reads: mostly one frame per read, some joined, some split."""
    frames = draw(st.lists(FRAMES, min_size=1, max_size=6))
    out: list[bytes] = []
    for data in frames:
        how = draw(st.integers(0, 5))
        if how == 0 and out:
            out[-1] += data  # two frames in one read
        elif how == 1 and len(data) > 1:
            cut = draw(st.integers(1, len(data) - 1))
            out += [data[:cut], data[cut:]]
        else:
            out.append(data)
    return out


def serve(chunks: list[bytes], *, fast: bool, max_message: int) -> Any:
    """What one server does with ``chunks`` on an open WebSocket: the messages it
    sends to the layer (reply channel left out), the bytes it writes, whether it
    closed, and Autobahn's traffic counters."""
    h = Harness(config=ServerConfig(max_ws_message_size=max_message))
    loop, txaio.config.loop = txaio.config.loop, h.reactor
    real = _frame_mask.lone_frame
    _frame_mask.lone_frame = real if fast else (lambda data: None)  # type: ignore[assignment]
    try:
        conn = h.connect()
        conn.send(handshake())
        h.reply({"accept": True}, h.receive("websocket.connect")["reply_channel"])
        conn.take()
        [socket] = h.server.websockets
        for data in chunks:
            conn.send(data)
        traffic = socket.trafficStats
        stats = [traffic.incomingOctetsWireLevel, traffic.incomingOctetsWebSocketLevel,
                 traffic.incomingOctetsAppLevel, traffic.incomingWebSocketFrames,
                 traffic.incomingWebSocketMessages]
        conn.lose()
    finally:
        _frame_mask.lone_frame = real  # type: ignore[assignment]
        txaio.config.loop = loop
    messages = []
    for channel in ("websocket.receive", "websocket.disconnect"):
        while (got := h.layer.receive([channel]))[0] is not None:
            message = dict(got[1])
            message.pop("reply_channel")
            messages.append((channel, message))
    return messages, conn.transport.value(), conn.closed, stats


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chunks=reads(), max_message=st.sampled_from([20, 1_000_000]))
def test_a_server_with_the_fast_path_does_what_one_without_does(
        chunks: list[bytes], max_message: int) -> None:
    assert serve(chunks, fast=True, max_message=max_message) == \
        serve(chunks, fast=False, max_message=max_message)


@pytest.mark.parametrize(("data", "expected"), [
    (frame(1, b"hello"), (False, b"hello")),
    (frame(2, b"\x00\xff" * 20), (True, b"\x00\xff" * 20)),
    (frame(1, b""), (False, b"")),
    (frame(2, b"x" * 125), (True, b"x" * 125)),
    (frame(1, b"\xff"), (False, b"\xff")),  # the caller checks UTF-8
])
def test_lone_frames(data: bytes, expected: Any) -> None:
    assert _frame_mask.lone_frame(data) == expected


@pytest.mark.parametrize(("data", "why"), [
    (frame(1, b"x" * 126), "an extended length"),
    (frame(1, b"hello", fin=False), "not final"),
    (frame(0, b"hello"), "a continuation"),
    (frame(9, b"hello"), "a ping"),
    (frame(2, b"hello", rsv=4), "an RSV bit (compressed)"),
    (frame(2, b"hello", masked=False), "unmasked"),
    (frame(1, b"hello")[:-1], "a part of a frame"),
    (frame(1, b"hi") + frame(1, b"there"), "two frames"),
    (b"\x81", "a header's first byte"),
])
def test_not_lone_frames(data: bytes, why: str) -> None:
    assert _frame_mask.lone_frame(data) is None, why


def test_the_fast_path_is_taken_on_an_open_socket(harness: Any,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Each small message read alone takes the fast path; a half-read one does not."""
    taken: list[bytes] = []
    real = _frame_mask.lone_frame

    def spy(data: bytes) -> Any:
        found = real(data)
        if found is not None:
            taken.append(found[1])
        return found

    monkeypatch.setattr(_frame_mask, "lone_frame", spy)
    h = harness()
    conn = h.connect()
    conn.send(handshake())
    h.reply({"accept": True}, h.receive("websocket.connect")["reply_channel"])
    conn.send(frame(1, b"one"))
    conn.send(frame(2, b"two"))
    split = frame(1, b"three")
    conn.send(split[:3])
    conn.send(split[3:])  # the rest of a frame Autobahn holds: Autobahn's
    got = [h.receive("websocket.receive") for _ in range(3)]
    assert [m.get("text", m.get("bytes")) for m in got] == ["one", b"two", "three"]
    assert [m["order"] for m in got] == [1, 2, 3]
    assert taken == [b"one", b"two"]


def test_a_half_read_header_is_autobahns(harness: Any) -> None:
    """After a read of one header byte, the next read continues that frame even when
    it looks like a whole frame of its own: the fast path leaves it to Autobahn."""
    h = harness()
    conn = h.connect()
    conn.send(handshake())
    h.reply({"accept": True}, h.receive("websocket.connect")["reply_channel"])
    data = client_frame(1, b"x", mask=b"\x80\x01\x02\x03")  # data[1:] is a lone frame too
    assert _frame_mask.lone_frame(data[1:]) == (False, b"")
    conn.send(data[:1])
    conn.send(data[1:])
    assert h.receive("websocket.receive")["text"] == "x"
