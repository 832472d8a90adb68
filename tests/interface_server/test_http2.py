"""Protocol tests for ``interface_server.http2``: HTTP/2 streams become messages, replies frames.

A connection here is a ``StringTransport`` that says ALPN chose ``h2`` and is
TLS (``ISSLTransport``); the client is the ``h2`` library's state machine. The
test moves bytes both ways (``H2Client.pump``), which also runs Twisted's
HTTP/2 send loop (``callLater(0)`` on the harness's ``MemoryReactorClock``).
No sockets, no threads, no real time.
"""

from __future__ import annotations

import logging
from typing import Any

import h2.errors
import h2.settings
import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IProtocolNegotiationFactory, ISSLTransport
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from zope.interface import implementer

from asgi_spec.formats import validate_http_request
from interface_server.config import ServerConfig
from interface_server.http2 import SwitchboardH2Connection
from interface_server.http2 import request_headers as message_headers_of
from tests.interface_server.h2client import Streams, client_connection, request_headers


@implementer(ISSLTransport)
class TLSStringTransport(StringTransport):
    """A ``StringTransport`` that is TLS and reports what ALPN negotiated."""

    def __init__(self, negotiated: bytes | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.negotiatedProtocol = negotiated
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1
        super().write(data)

    def setTcpNoDelay(self, enabled: bool) -> None:
        pass

    def getPeerCertificate(self) -> None:
        return None


class H2Client:
    """An HTTP/2 client (the ``h2`` state machine) on a harness connection."""

    def __init__(self, harness: Any, *, window: int | None = None, ack: bool = True,
                 alpn: bytes | None = b"h2", **config: Any) -> None:
        self.harness = harness
        self.transport = TLSStringTransport(
            alpn, peerAddress=IPv4Address("TCP", "10.0.0.9", 50500),
            hostAddress=IPv4Address("TCP", "127.0.0.1", 8443))
        self.protocol = harness.server.http_factory.buildProtocol(self.transport.getPeer())
        self.protocol.makeConnection(self.transport)
        self.h2 = client_connection(**config)
        if window is not None:
            self.h2.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
        self.streams = Streams(ack)  # ack: give flow-control credit back for what arrives
        self.pump()

    @property
    def goaway(self) -> Any:
        return self.streams.goaway

    @property
    def connection(self) -> SwitchboardH2Connection:
        return self.protocol.upgraded  # type: ignore[no-any-return]

    def request(self, path: bytes = b"/p?q=1", method: bytes = b"GET",
                headers: list[tuple[bytes, bytes]] = (), body: bytes | None = None,
                end: bool = True) -> int:
        stream_id = self.h2.get_next_available_stream_id()
        self.h2.send_headers(stream_id, request_headers(path, method, b"example.com", headers),
                             end_stream=body is None and end)
        if body is not None:
            self.h2.send_data(stream_id, body, end_stream=end)
        self.pump()
        return stream_id

    def send_data(self, stream_id: int, data: bytes, end: bool = False) -> None:
        self.h2.send_data(stream_id, data, end_stream=end)
        self.pump()

    def reset(self, stream_id: int) -> None:
        self.h2.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
        self.pump()

    def open_window(self, stream_id: int, size: int) -> None:
        self.h2.increment_flow_control_window(size, stream_id)
        self.pump()

    def pump(self) -> None:
        """Move bytes both ways and run the server's send loop until nothing moves."""
        for _ in range(10_000):
            outgoing = self.h2.data_to_send()
            if outgoing and not self.transport.disconnecting:
                self.protocol.dataReceived(outgoing)
            self.harness.reactor.advance(0)
            incoming = self.transport.value()
            self.transport.clear()
            if incoming:
                self.streams.handle(self.h2, self.h2.receive_data(incoming))
            if not outgoing and not incoming and not self._due_now():
                return
        raise AssertionError("the connection never settled")

    def _due_now(self) -> bool:
        now = self.harness.reactor.seconds()
        return any(call.getTime() <= now for call in self.harness.reactor.getDelayedCalls())

    def lose(self) -> None:
        self.protocol.connectionLost(Failure(ConnectionDone()))


@pytest.fixture
def client(harness: Any) -> Any:
    def make(h: Any = None, **kwargs: Any) -> tuple[Any, H2Client]:
        h = h or harness()
        return h, H2Client(h, **kwargs)

    return make


def reply_to(h: Any, message: dict[str, Any], **reply: Any) -> None:
    h.reply({"status": 200, "content": b"ok", **reply}, message["reply_channel"])


def test_the_factory_offers_h2_then_http11_by_alpn(harness: Any) -> None:
    """The HTTP factory tells Twisted's TLS layer to offer h2 first, then http/1.1."""
    factory = harness().server.http_factory
    assert IProtocolNegotiationFactory.providedBy(factory)
    assert factory.acceptableProtocols() == [b"h2", b"http/1.1"]


def test_h2_negotiated_connection_becomes_an_http2_connection(client: Any) -> None:
    """A connection whose ALPN said h2 is served by the HTTP/2 connection, which counts as
    one of the server's HTTP connections (the HTTP/1.1 channel no longer does)."""
    h, c = client()
    assert isinstance(c.connection, SwitchboardH2Connection)
    assert h.server.http_channels == {c.connection}
    assert c.connection.idle


def test_a_stream_becomes_an_http_request_with_version_2(client: Any) -> None:
    """A stream becomes a valid http.request: http_version "2", scheme https, headers in
    order with duplicates, host from :authority, the connection's addresses."""
    h, c = client()
    c.request(b"/caf%C3%A9?q=%20", headers=[(b"x-multi", b"1"), (b"accept", b"*/*"),
                                            (b"x-multi", b"2"), (b"cookie", b"a=1"),
                                            (b"cookie", b"b=2")])
    message = h.receive("http.request")
    validate_http_request(message)
    assert (message["http_version"], message["scheme"], message["method"]) == ("2", "https",
                                                                              "GET")
    assert (message["path"], message["query_string"]) == ("/café", b"q=%20")
    assert message["headers"] == [[b"host", b"example.com"], [b"x-multi", b"1"],
                                  [b"accept", b"*/*"], [b"x-multi", b"2"],
                                  [b"cookie", b"a=1; b=2"]]
    assert message["client"] == ["10.0.0.9", 50500]
    assert message["server"] == ["127.0.0.1", 8443]


def test_request_headers_keep_order_and_take_host_from_authority() -> None:
    """Pseudo-headers go; :authority becomes host unless a host header came too."""
    block = [(b":method", b"GET"), (b":authority", b"a.example"), (b":path", b"/"),
             (b"b", b"1"), (b"a", b"2"), (b"b", b"3")]
    assert message_headers_of(block) == [(b"host", b"a.example"), (b"b", b"1"),
                                         (b"a", b"2"), (b"b", b"3")]
    assert message_headers_of([*block, (b"host", b"h")])[0] == (b"b", b"1")


def test_response_is_sent_on_its_stream(client: Any) -> None:
    """A Response becomes HEADERS (with content-length) and DATA, ending the stream;
    headers HTTP/2 forbids are dropped; the connection stays open."""
    h, c = client()
    sid = c.request()
    reply_to(h, h.receive("http.request"), status=201, content=b"hello",
             headers=[(b"x-reply", b"yes"), (b"connection", b"keep-alive"),
                      (b"keep-alive", b"timeout=5"), (b"upgrade", b"h2c")])
    c.pump()
    stream = c.streams[sid]
    assert stream.status == 201 and stream.ended and bytes(stream.data) == b"hello"
    names = [name for name, _ in stream.headers]
    assert (b"x-reply", b"yes") in stream.headers and (b"content-length", b"5") in stream.headers
    assert not {b"connection", b"keep-alive", b"upgrade"} & set(names)
    assert not c.transport.disconnecting and c.connection.idle


def test_streaming_response_chunks_go_out_as_they_arrive(client: Any) -> None:
    """Chunks are written to the stream as they arrive; the stream ends with the last."""
    h, c = client()
    sid = c.request(b"/events")
    channel = h.receive("http.request")["reply_channel"]
    h.reply({"status": 200, "headers": [(b"content-type", b"text/event-stream")],
             "more_content": True}, channel)
    c.pump()
    assert c.streams[sid].status == 200 and not c.streams[sid].ended
    h.reply({"content": b"data: 1\n\n", "more_content": True}, channel)
    c.pump()
    assert bytes(c.streams[sid].data) == b"data: 1\n\n" and not c.streams[sid].ended
    h.reply({"content": b"data: 2\n\n"}, channel)
    c.pump()
    assert bytes(c.streams[sid].data) == b"data: 1\n\ndata: 2\n\n" and c.streams[sid].ended


def test_streams_are_answered_independently(client: Any) -> None:
    """Two streams make two requests; the second can be answered first; each gets its own."""
    h, c = client()
    first, second = c.request(b"/one"), c.request(b"/two")
    one, two = h.receive("http.request"), h.receive("http.request")
    assert (one["path"], two["path"]) == ("/one", "/two")
    assert one["reply_channel"] != two["reply_channel"]
    reply_to(h, two, content=b"second")
    c.pump()
    assert c.streams[second].ended and not c.streams[first].headers
    reply_to(h, one, content=b"first")
    c.pump()
    assert bytes(c.streams[first].data) == b"first"


def test_post_body_arrives_inline_and_through_a_body_channel(client: Any,
                                                            harness: Any) -> None:
    """A small body travels inline; one over body_chunk_size goes on a body_channel in
    chunks, however the client split it into DATA frames."""
    h, c = client(harness(config=ServerConfig(body_chunk_size=1024)))
    c.request(b"/small", method=b"POST", body=b"x" * 100)
    assert h.receive("http.request")["body"] == b"x" * 100
    big = bytes(range(256)) * 10  # 2,560 bytes
    sid = c.request(b"/big", method=b"POST", body=big[:1500], end=False)
    c.send_data(sid, big[1500:], end=True)
    message = h.receive("http.request")
    assert message["body"] == big[:1024]
    chunks = [h.receive(message["body_channel"]) for _ in range(2)]
    assert b"".join(chunk["content"] for chunk in chunks) == big[1024:]
    assert [chunk["more_content"] for chunk in chunks] == [True, False]


def test_client_reset_sends_http_disconnect_and_the_connection_goes_on(client: Any) -> None:
    """A stream the client resets mid-response gets http.disconnect; a late reply for it is
    dropped; the other streams and new ones are served."""
    h, c = client()
    doomed, other = c.request(b"/doomed"), c.request(b"/other")
    gone, kept = h.receive("http.request"), h.receive("http.request")
    h.reply({"status": 200, "more_content": True, "content": b"part"}, gone["reply_channel"])
    c.pump()
    c.reset(doomed)
    disconnect = h.receive("http.disconnect")
    assert disconnect == {"reply_channel": gone["reply_channel"], "path": "/doomed"}
    h.reply({"content": b"late"}, gone["reply_channel"])
    assert h.server.stats["replies_dropped"] == 1
    reply_to(h, kept, content=b"kept")
    again = c.request(b"/again")
    reply_to(h, h.receive("http.request"), content=b"again")
    c.pump()
    assert bytes(c.streams[other].data) == b"kept" and c.streams[other].ended
    assert bytes(c.streams[again].data) == b"again"
    assert not c.transport.disconnecting and c.goaway is None


def test_losing_the_connection_disconnects_every_open_stream(client: Any) -> None:
    """When the connection goes, each unanswered stream gets its own http.disconnect."""
    h, c = client()
    c.request(b"/a"), c.request(b"/b")
    channels = {h.receive("http.request")["reply_channel"] for _ in range(2)}
    c.lose()
    assert {h.receive("http.disconnect")["reply_channel"] for _ in range(2)} == channels
    assert h.server.http_channels == set() and h.server.http_requests == set()


def test_declared_body_over_the_limit_is_413_on_its_stream_only(client: Any,
                                                                harness: Any) -> None:
    """A Content-Length over --max-body-size is answered 413 at once on that stream and the
    client is told to stop sending (RST_STREAM NO_ERROR); body data it had already sent
    is absorbed, and the connection serves the next stream."""
    h, c = client(harness(config=ServerConfig(max_body_size=100)))
    sid = c.h2.get_next_available_stream_id()
    c.h2.send_headers(sid, [(b":method", b"POST"), (b":scheme", b"https"),
                            (b":authority", b"h"), (b":path", b"/up"),
                            (b"content-length", b"1000")])
    c.protocol.dataReceived(c.h2.data_to_send())  # the server answers...
    c.h2.send_data(sid, b"x" * 400)  # ...while the client, not having read it, sends on
    c.protocol.dataReceived(c.h2.data_to_send())
    h.reactor.advance(0)
    c.h2.send_data(sid, b"x" * 400)
    c.protocol.dataReceived(c.h2.data_to_send())
    c.pump()
    assert c.streams[sid].status == 413 and c.streams[sid].ended
    assert c.streams[sid].reset == h2.errors.ErrorCodes.NO_ERROR
    assert h.nothing_on("http.request")
    next_sid = c.request(b"/next")
    reply_to(h, h.receive("http.request"))
    c.pump()
    assert c.streams[next_sid].ended and c.goaway is None and not c.transport.disconnecting


def test_streamed_body_over_the_limit_is_413(client: Any, harness: Any) -> None:
    """A body without Content-Length that grows past --max-body-size gets 413 on its stream."""
    h, c = client(harness(config=ServerConfig(max_body_size=100)))
    sid = c.request(b"/up", method=b"POST", body=b"x" * 60, end=False)
    assert not c.streams[sid].headers
    c.send_data(sid, b"x" * 60)
    assert c.streams[sid].status == 413
    assert h.nothing_on("http.request") and c.goaway is None


def test_too_many_headers_is_431_on_its_stream(client: Any, harness: Any) -> None:
    """More header fields than --max-headers allow: 431 on that stream only."""
    h, c = client(harness(config=ServerConfig(max_headers=5)))
    sid = c.request(headers=[(f"x-{i}".encode(), b"v") for i in range(8)])
    assert c.streams[sid].status == 431
    assert h.nothing_on("http.request")
    ok = c.request()
    reply_to(h, h.receive("http.request"))
    c.pump()
    assert c.streams[ok].status == 200


def test_stalled_upload_is_408_on_its_stream(client: Any, harness: Any) -> None:
    """A request body that stops arriving for --body-timeout gets 408 on its stream."""
    h, c = client(harness(config=ServerConfig(body_timeout=5)))
    sid = c.request(b"/up", method=b"POST", body=b"x" * 10, end=False)
    h.advance(6)
    c.pump()
    assert c.streams[sid].status == 408


def test_invalid_reply_after_start_resets_only_that_stream(client: Any) -> None:
    """A broken Chunk after the Response started resets that stream (RST_STREAM) and sends
    http.disconnect; the connection and its other streams go on."""
    h, c = client()
    bad, good = c.request(b"/bad"), c.request(b"/good")
    broken, fine = h.receive("http.request"), h.receive("http.request")
    h.reply({"status": 200, "more_content": True}, broken["reply_channel"])
    h.reply({"content": "not bytes"}, broken["reply_channel"])
    c.pump()
    assert c.streams[bad].reset == h2.errors.ErrorCodes.INTERNAL_ERROR
    assert h.receive("http.disconnect")["reply_channel"] == broken["reply_channel"]
    reply_to(h, fine)
    c.pump()
    assert c.streams[good].status == 200 and not c.transport.disconnecting


def test_no_response_is_504_on_its_stream(client: Any) -> None:
    """No reply within --http-timeout: 504 on the stream."""
    h, c = client()
    sid = c.request()
    h.advance(h.server.config.http_timeout + 1)
    c.pump()
    assert c.streams[sid].status == 504


def test_flow_control_holds_a_stream_without_blocking_the_others(client: Any) -> None:
    """A response larger than the client's stream window is sent only up to the window;
    the client's other stream is answered meanwhile; opening the window sends the rest."""
    h, c = client(window=1000, ack=False)
    big, small = c.request(b"/big"), c.request(b"/small")
    slow, quick = h.receive("http.request"), h.receive("http.request")
    reply_to(h, slow, content=b"b" * 5000)
    reply_to(h, quick, content=b"small")
    c.pump()
    assert len(c.streams[big].data) == 1000 and not c.streams[big].ended
    assert bytes(c.streams[small].data) == b"small" and c.streams[small].ended
    assert c.connection.unsent_bytes(big) == 4000
    now = h.reactor.seconds()  # waiting for the window: nothing runs again and again
    assert not [call for call in h.reactor.getDelayedCalls() if call.getTime() <= now]
    c.open_window(big, 4000)
    assert len(c.streams[big].data) == 5000 and c.streams[big].ended


def test_a_response_goes_out_in_one_write_with_its_end_on_the_data(client: Any) -> None:
    """Head, body and end of a response answered at once leave in one transport write,
    the end flag on the (only) DATA frame; replies to many streams in one reactor turn
    share one write too."""
    h, c = client()
    sid = c.request()
    message = h.receive("http.request")
    c.transport.writes = 0
    reply_to(h, message, content=b"hello")
    c.pump()
    assert c.transport.writes == 1
    assert c.streams[sid].frames == 1 and c.streams[sid].ended
    ids = [c.request(f"/{n}".encode()) for n in range(10)]
    messages = [h.receive("http.request") for _ in ids]
    c.transport.writes = 0
    for message in messages:
        reply_to(h, message)
    c.pump()
    assert c.transport.writes == 1
    assert all(c.streams[i].ended for i in ids)


def test_large_responses_take_turns(client: Any) -> None:
    """Two large responses queued at once are sent interleaved, frame by frame, not one
    after the other."""
    h, c = client()
    first, second = c.request(b"/a"), c.request(b"/b")
    a, b = h.receive("http.request"), h.receive("http.request")
    reply_to(h, a, content=b"a" * 60_000)
    reply_to(h, b, content=b"b" * 60_000)
    c.pump()
    assert c.streams[first].ended and c.streams[second].ended
    assert c.streams.order[:4] == [first, second, first, second]


def test_a_stream_far_past_the_output_limit_is_reset_on_the_write(
        client: Any, harness: Any) -> None:
    """Streamed chunks piling up unsent (the client keeps the stream's window shut) past
    four times --max-output-buffer reset that stream at once; the others go on."""
    h, c = client(harness(config=ServerConfig(max_output_buffer=4096)), window=100, ack=False)
    stuck, other = c.request(b"/stuck"), c.request(b"/other")
    message, fine = h.receive("http.request"), h.receive("http.request")
    h.reply({"status": 200, "more_content": True}, message["reply_channel"])
    for _ in range(9):
        h.reply({"content": b"z" * 2000, "more_content": True}, message["reply_channel"])
    c.pump()
    assert c.streams[stuck].reset == h2.errors.ErrorCodes.INTERNAL_ERROR
    assert h.server.stats["slow_readers_cut"] == 1
    assert h.receive("http.disconnect")["reply_channel"] == message["reply_channel"]
    reply_to(h, fine, content=b"y" * 50)
    c.pump()
    assert c.streams[other].ended and not c.transport.disconnecting


def test_a_stream_over_the_output_limit_for_a_sweep_is_reset(client: Any,
                                                              harness: Any) -> None:
    """Unsent data past --max-output-buffer is tolerated for one sweep (a burst), and
    the stream is reset when it is still there at the next."""
    h, c = client(harness(config=ServerConfig(max_output_buffer=4096)), window=100, ack=False)
    stuck = c.request(b"/stuck")
    message = h.receive("http.request")
    h.reply({"status": 200, "more_content": True, "content": b"z" * 6000},
            message["reply_channel"])
    c.pump()
    h.advance(1)
    c.pump()
    assert c.streams[stuck].reset is None
    h.advance(1)
    c.pump()
    assert c.streams[stuck].reset == h2.errors.ErrorCodes.INTERNAL_ERROR
    assert h.server.stats["slow_readers_cut"] == 1


def test_draining_answers_new_streams_503_and_closes_when_idle(client: Any) -> None:
    """While draining, an in-flight stream completes, a new stream gets 503, and the
    connection says GOAWAY (no error) and closes once its last stream is done."""
    h, c = client()
    inflight = c.request(b"/inflight")
    message = h.receive("http.request")
    h.server.shutdown()
    late = c.request(b"/late")
    assert c.streams[late].status == 503
    assert not c.transport.disconnecting
    reply_to(h, message)
    c.pump()
    assert c.streams[inflight].status == 200 and c.streams[inflight].ended
    assert c.transport.disconnecting
    assert c.goaway is not None and c.goaway.error_code == 0


def test_drain_timeout_cuts_what_is_left(client: Any, caplog: pytest.LogCaptureFixture) -> None:
    """Past --graceful-timeout, an HTTP/2 connection with an unanswered stream is closed
    (GOAWAY), the stream forgotten and disconnected, without errors."""
    h, c = client()
    c.request(b"/never")
    message = h.receive("http.request")
    stopped = h.server.shutdown()
    with caplog.at_level("WARNING"):
        h.advance(h.server.config.graceful_timeout + 2)
    c.pump()
    assert stopped.called
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert c.transport.disconnecting and c.goaway is not None
    assert h.server.http_requests == set()
    assert h.receive("http.disconnect")["reply_channel"] == message["reply_channel"]


def test_a_malformed_header_block_ends_only_its_connection(client: Any) -> None:
    """A stream carrying a header HTTP/2 forbids (``upgrade``, as a WebSocket handshake
    would) is a protocol error: the h2 library ends that connection with GOAWAY; no
    request is made and the server serves other connections."""
    h, c = client(validate_outbound_headers=False, normalize_outbound_headers=False)
    c.request(b"/ws", headers=[(b"upgrade", b"websocket")])
    assert c.transport.disconnecting and h.nothing_on("http.request")
    _, other = client(h)
    sid = other.request()
    reply_to(h, h.receive("http.request"))
    other.pump()
    assert other.streams[sid].status == 200


def test_idle_connection_is_closed_after_the_keep_alive_timeout(client: Any,
                                                                harness: Any) -> None:
    """An HTTP/2 connection without streams for --keep-alive-timeout gets GOAWAY and is
    closed; one with a stream open is not."""
    h, c = client(harness(config=ServerConfig(keep_alive_timeout=5)))
    busy = H2Client(h)
    busy.request()
    h.advance(6)
    c.pump()
    assert c.transport.disconnecting and c.goaway is not None
    assert not busy.transport.disconnecting


def test_over_the_concurrency_limit_streams_get_503_then_close(client: Any,
                                                              harness: Any) -> None:
    """An HTTP/2 connection accepted past --limit-concurrency answers 503 and closes."""
    h = harness(config=ServerConfig(limit_concurrency=1))
    _, first = client(h)
    _, second = client(h)
    sid = second.request()
    assert second.streams[sid].status == 503
    assert second.transport.disconnecting
    assert not first.transport.disconnecting


def test_access_log_says_http_2(client: Any, caplog: pytest.LogCaptureFixture) -> None:
    """The access log line of a stream says HTTP/2."""
    h, c = client()
    c.request(b"/logged")
    with caplog.at_level("INFO", logger="interface_server.access"):
        reply_to(h, h.receive("http.request"))
    assert '"GET /logged HTTP/2" 200' in caplog.text


def test_tls_without_h2_stays_http11(harness: Any) -> None:
    """Over TLS with ALPN http/1.1 (or none), the connection is HTTP/1.1 and its
    messages say scheme https."""
    h = harness()
    for alpn in (b"http/1.1", None):
        transport = TLSStringTransport(alpn, peerAddress=IPv4Address("TCP", "10.0.0.9", 1),
                                       hostAddress=IPv4Address("TCP", "127.0.0.1", 8443))
        protocol = h.server.http_factory.buildProtocol(transport.getPeer())
        protocol.makeConnection(transport)
        protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        message = h.receive("http.request")
        assert (message["http_version"], message["scheme"]) == ("1.1", "https")
        assert protocol.upgraded is None


def test_head_response_has_no_body(client: Any) -> None:
    """A HEAD over HTTP/2 gets the head and an ended stream, no body."""
    h, c = client()
    sid = c.request(method=b"HEAD")
    reply_to(h, h.receive("http.request"), content=b"ignored")
    c.pump()
    assert c.streams[sid].status == 200 and c.streams[sid].ended
    assert bytes(c.streams[sid].data) == b""


def test_operations_paths_answer_over_http2(client: Any, harness: Any) -> None:
    """The server's own paths (here --health) answer over HTTP/2 too."""
    h, c = client(harness(config=ServerConfig(health=True)))
    sid = c.request(b"/-/health")
    assert c.streams[sid].status == 200
    assert b'"status": "ok"' in bytes(c.streams[sid].data)
    assert h.nothing_on("http.request")
