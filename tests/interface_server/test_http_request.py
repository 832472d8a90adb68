"""Protocol tests for ``interface_server.http_request``: requests become messages, replies bytes.

Each test feeds raw HTTP to a channel on a ``StringTransport``, reads what the
server sent to the in-memory layer, dispatches replies, and checks the bytes
written back. Time moves only with ``harness.advance``.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from asgi_spec.exceptions import LayerUnavailable
from asgi_spec.formats import validate_http_request
from interface_server.config import ServerConfig

GET = b"GET /path?q=1 HTTP/1.1\r\nHost: example.com\r\n\r\n"


def post(body: bytes, extra: bytes = b"") -> bytes:
    return (b"POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: "
            + str(len(body)).encode() + b"\r\n" + extra + b"\r\n" + body)


def respond(harness: Any, message: dict[str, Any], **reply: Any) -> None:
    harness.reply({"status": 200, "content": b"ok", **reply}, message["reply_channel"])


def status_of(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1])


def test_get_becomes_a_valid_http_request(harness: Any) -> None:
    """A GET becomes an http.request with every field, headers in order, lower-cased."""
    h = harness()
    conn = h.connect()
    conn.send(b"GET /caf%C3%A9?q=%20 HTTP/1.1\r\nHost: example.com\r\nX-Multi: 1\r\n"
              b"Accept: */*\r\nx-multi: 2\r\n\r\n")
    message = h.receive("http.request")
    validate_http_request(message)
    assert message["path"] == "/café"
    assert message["query_string"] == b"q=%20"
    assert message["headers"] == [[b"host", b"example.com"], [b"x-multi", b"1"],
                                  [b"accept", b"*/*"], [b"x-multi", b"2"]]
    assert (message["method"], message["http_version"], message["scheme"]) == ("GET", "1.1",
                                                                               "http")
    assert message["client"] == ["10.0.0.7", 50123]
    assert message["server"] == ["127.0.0.1", 8000]
    assert message["reply_channel"].startswith("test!")
    assert message["body"] == b""


def test_response_is_written(harness: Any) -> None:
    """A complete Response is written with a Content-Length, and the connection stays open."""
    h = harness()
    conn = h.connect()
    conn.send(GET)
    h.reply({"status": 201, "headers": [(b"X-Reply", b"yes")], "content": b"hello"},
            h.receive("http.request")["reply_channel"])
    raw = conn.take()
    assert raw.startswith(b"HTTP/1.1 201 Created\r\n")
    assert b"X-Reply: yes\r\n" in raw and b"Content-Length: 5\r\n" in raw
    assert raw.endswith(b"\r\n\r\nhello")
    assert not conn.closed


def test_large_body_streams_through_a_body_channel(harness: Any) -> None:
    """A body over one chunk goes through body_channel in bounded chunks, in order."""
    h = harness(config=ServerConfig(body_chunk_size=1000))
    conn = h.connect()
    body = bytes(range(256)) * 10
    conn.send(post(body))
    message = h.receive("http.request")
    assert message["body"] == body[:1000]
    chunks = []
    while True:
        chunk = h.receive(message["body_channel"])
        assert len(chunk["content"]) <= 1000
        chunks.append(chunk)
        if not chunk["more_content"]:
            break
    assert message["body"] + b"".join(c["content"] for c in chunks) == body
    assert len(chunks) == 2


def test_body_chunks_wait_when_the_body_channel_is_full(harness: Any) -> None:
    """ChannelFull on a body chunk is backpressure: the chunk is retried, none is lost."""
    h = harness(config=ServerConfig(body_chunk_size=10),
                channel_capacity={"http.request.body*": 1})
    conn = h.connect()
    body = b"0123456789abcdefghij!!!!!"
    conn.send(post(body))
    message = h.receive("http.request")
    received = [message["body"]]
    for _ in range(2):
        chunk = h.receive(message["body_channel"])
        received.append(chunk["content"])
        h.reactor.advance(0.05)
    assert b"".join(received) == body


def test_client_leaving_mid_body_closes_the_body_channel(harness: Any) -> None:
    """If the client goes while chunks wait, the body channel gets a closed chunk."""
    h = harness(config=ServerConfig(body_chunk_size=10),
                channel_capacity={"http.request.body*": 1})
    conn = h.connect()
    conn.send(post(b"x" * 35))
    message = h.receive("http.request")
    assert h.receive(message["body_channel"])["more_content"] is True
    conn.lose()
    h.reactor.advance(0.05)
    chunk = h.receive(message["body_channel"])
    assert chunk.get("closed") is True
    assert h.receive("http.disconnect")["reply_channel"] == message["reply_channel"]


def test_streaming_response_is_written_as_it_arrives(harness: Any) -> None:
    """A Response with more_content sends its head at once; each chunk goes out on arrival."""
    h = harness()
    conn = h.connect()
    conn.send(GET)
    channel = h.receive("http.request")["reply_channel"]
    h.reply({"status": 200, "headers": [(b"content-type", b"text/event-stream")],
             "more_content": True}, channel)
    head = conn.take()
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Transfer-Encoding: chunked" in head
    h.reply({"content": b"data: 1\n\n", "more_content": True}, channel)
    assert conn.take() == b"9\r\ndata: 1\n\n\r\n"
    h.reply({"content": b"data: 2\n\n", "more_content": False}, channel)
    assert conn.take() == b"9\r\ndata: 2\n\n\r\n0\r\n\r\n"
    assert not conn.closed


def test_head_response_has_no_body(harness: Any) -> None:
    """A HEAD response carries headers only."""
    h = harness()
    conn = h.connect()
    conn.send(b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\n")
    h.reply({"status": 200, "headers": [(b"content-length", b"42")]},
            h.receive("http.request")["reply_channel"])
    raw = conn.take()
    assert raw.endswith(b"Content-Length: 42\r\n\r\n")


def test_invalid_reply_gives_500_and_names_the_field(harness: Any,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    """A bad reply before the response started is logged naming the field; client gets 500."""
    h = harness()
    conn = h.connect()
    conn.send(GET)
    with caplog.at_level(logging.ERROR, "interface_server"):
        h.reply({"status": 200, "body": b"typo"}, h.receive("http.request")["reply_channel"])
    assert status_of(conn.take()) == 500
    assert "'body'" in caplog.text
    assert h.server.stats["bad_replies"] == 1


def test_invalid_reply_after_start_cuts_the_connection(harness: Any) -> None:
    """A bad reply mid-stream cannot become a 500: the connection is cut instead."""
    h = harness()
    conn = h.connect()
    conn.send(GET)
    channel = h.receive("http.request")["reply_channel"]
    h.reply({"status": 200, "more_content": True}, channel)
    h.reply({"status": 200}, channel)
    assert conn.transport.disconnecting


def test_reply_after_finish_is_dropped(harness: Any) -> None:
    """A reply for a finished request is dropped and counted, not written."""
    h = harness()
    conn = h.connect()
    conn.send(GET)
    message = h.receive("http.request")
    respond(h, message)
    conn.take()
    respond(h, message)
    assert conn.take() == b""
    assert h.server.router.dropped == 1


def test_no_worker_is_503_at_once(harness: Any) -> None:
    """With no worker registered, the client gets 503 at once saying why; nothing is queued."""
    h = harness(workers=None)
    conn = h.connect()
    conn.send(GET)
    raw = conn.take()
    assert status_of(raw) == 503
    assert b"no worker is consuming the http.request channel" in raw
    assert h.nothing_on("http.request")


def test_worker_for_other_channels_only_is_503(harness: Any) -> None:
    """A worker that consumes only websocket.* does not answer http.request: 503."""
    h = harness(workers=("websocket.*",))
    conn = h.connect()
    conn.send(GET)
    assert status_of(conn.take()) == 503


def test_worker_appearing_later_is_noticed(harness: Any) -> None:
    """A worker that registers after a 503 is seen once the view may refresh (1 s)."""
    h = harness(workers=None)
    conn = h.connect()
    conn.send(GET)
    assert status_of(conn.take()) == 503
    h.add_worker("late", ("http.request",))
    h.reactor.advance(1)
    conn2 = h.connect()
    conn2.send(GET)
    assert conn2.take() == b""
    h.receive("http.request")


def test_channel_full_is_503_and_close(harness: Any) -> None:
    """ChannelFull on http.request answers 503 and closes; the server keeps serving."""
    h = harness(channel_capacity={"http.request": 1})
    first = h.connect()
    first.send(GET)
    second = h.connect()
    second.send(GET)
    raw = second.take()
    assert status_of(raw) == 503
    assert b"full" in raw
    assert second.closed
    respond(h, h.receive("http.request"))
    assert status_of(first.take()) == 200


def test_layer_unavailable_is_503_with_a_log(harness: Any, monkeypatch: pytest.MonkeyPatch,
                                             caplog: pytest.LogCaptureFixture) -> None:
    """A layer outage answers 503 with a clear body and logs an error."""
    h = harness()

    def down(channel: str, message: dict[str, Any]) -> None:
        raise LayerUnavailable("cannot reach redis://localhost:6379/0")

    monkeypatch.setattr(h.layer, "send", down)
    conn = h.connect()
    with caplog.at_level(logging.ERROR, "interface_server"):
        conn.send(GET)
    raw = conn.take()
    assert status_of(raw) == 503
    assert b"channel layer is unavailable" in raw
    assert "cannot reach redis" in caplog.text


def test_http_timeout_is_504(harness: Any) -> None:
    """No response within --http-timeout gives 504 with a clear body; not a second sooner."""
    h = harness(config=ServerConfig(http_timeout=10))
    conn = h.connect()
    conn.send(GET)
    h.advance(9)
    assert conn.take() == b""
    h.advance(2)
    raw = conn.take()
    assert status_of(raw) == 504
    assert b"did not respond within 10 s" in raw
    assert h.server.stats["http_timeouts"] == 1


def test_silent_stream_is_cut_after_the_timeout(harness: Any) -> None:
    """A started response that sends nothing for --http-timeout is cut."""
    h = harness(config=ServerConfig(http_timeout=10))
    conn = h.connect()
    conn.send(GET)
    channel = h.receive("http.request")["reply_channel"]
    h.reply({"status": 200, "more_content": True}, channel)
    h.advance(8)
    h.reply({"content": b"tick", "more_content": True}, channel)
    h.advance(8)
    assert not conn.transport.disconnecting
    h.advance(3)
    assert conn.transport.disconnecting


def test_client_leaving_sends_http_disconnect(harness: Any) -> None:
    """If the client goes before its response, http.disconnect is sent for its channel."""
    h = harness()
    conn = h.connect()
    conn.send(GET)
    message = h.receive("http.request")
    conn.lose()
    assert h.receive("http.disconnect") == {"reply_channel": message["reply_channel"],
                                            "path": "/path"}
    respond(h, message)
    assert h.server.router.dropped == 1


def test_no_http_disconnect_after_a_complete_response(harness: Any) -> None:
    """A connection closed after its response was complete sends no http.disconnect."""
    h = harness()
    conn = h.connect()
    conn.send(GET)
    respond(h, h.receive("http.request"))
    conn.lose()
    assert h.nothing_on("http.disconnect")


def test_full_http_disconnect_is_dropped(harness: Any) -> None:
    """A full http.disconnect channel drops the notification; nothing crashes."""
    h = harness(channel_capacity={"http.disconnect": 1})
    for _ in range(2):
        conn = h.connect()
        conn.send(GET)
        h.receive("http.request")
        conn.lose()
    assert h.server.stats["notifications_dropped"] == 1


def test_bad_path_leaves_no_route_behind(harness: Any) -> None:
    """A request refused with 400 before sending leaves no reply channel registered."""
    h = harness()
    conn = h.connect()
    conn.send(b"GET /%FF HTTP/1.1\r\nHost: h\r\n\r\n")
    assert status_of(conn.take()) == 400
    assert len(h.server.router) == 0
    assert not h.server.http_requests


def test_root_path(harness: Any) -> None:
    """--root-path is passed as root_path; the path is left whole."""
    h = harness(config=ServerConfig(root_path="/app"))
    conn = h.connect()
    conn.send(b"GET /app/x HTTP/1.1\r\nHost: h\r\n\r\n")
    message = h.receive("http.request")
    assert (message["root_path"], message["path"]) == ("/app", "/app/x")


def test_proxy_headers_from_a_trusted_proxy(harness: Any) -> None:
    """With --proxy-headers, a trusted proxy's X-Forwarded-* set client and scheme."""
    h = harness(config=ServerConfig(proxy_headers=True, forwarded_allow_ips="10.0.0.0/8"))
    conn = h.connect(("10.0.0.7", 1234))
    conn.send(b"GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 198.51.100.4\r\n"
              b"X-Forwarded-Proto: https\r\n\r\n")
    message = h.receive("http.request")
    assert message["client"] == ["198.51.100.4", 0]
    assert message["scheme"] == "https"


def test_proxy_headers_from_anyone_else_are_ignored(harness: Any) -> None:
    """X-Forwarded-* from an untrusted peer are ignored."""
    h = harness(config=ServerConfig(proxy_headers=True, forwarded_allow_ips="127.0.0.1"))
    conn = h.connect(("203.0.113.5", 1234))
    conn.send(b"GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n")
    assert h.receive("http.request")["client"] == ["203.0.113.5", 1234]


def test_proxy_headers_off_by_default(harness: Any) -> None:
    """Without --proxy-headers, even a loopback peer's X-Forwarded-For is ignored."""
    h = harness()
    conn = h.connect(("127.0.0.1", 1234))
    conn.send(b"GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n")
    assert h.receive("http.request")["client"] == ["127.0.0.1", 1234]


def test_access_log_line(harness: Any, caplog: pytest.LogCaptureFixture) -> None:
    """Each finished request writes one access-log line."""
    h = harness()
    conn = h.connect()
    conn.send(b"GET /x?y=1 HTTP/1.1\r\nHost: h\r\nUser-Agent: probe/1\r\n\r\n")
    with caplog.at_level(logging.INFO, "interface_server.access"):
        respond(h, h.receive("http.request"))
    lines = [r.getMessage() for r in caplog.records if r.name == "interface_server.access"]
    assert len(lines) == 1
    assert '10.0.0.7 - - [' in lines[0]
    assert '"GET /x?y=1 HTTP/1.1" 200 2 "-" "probe/1"' in lines[0]


def test_access_log_json_and_off(harness: Any, caplog: pytest.LogCaptureFixture) -> None:
    """--access-log-json writes JSON; --no-access-log writes nothing."""
    for config, expected in ((ServerConfig(access_log_json=True), 1),
                             (ServerConfig(access_log=False), 0)):
        caplog.clear()
        h = harness(config=config)
        conn = h.connect()
        conn.send(GET)
        with caplog.at_level(logging.INFO, "interface_server.access"):
            respond(h, h.receive("http.request"))
        lines = [r.getMessage() for r in caplog.records if r.name == "interface_server.access"]
        assert len(lines) == expected
        if expected:
            assert lines[0].startswith('{"')


def test_no_access_records_are_made_when_nothing_reads_them(harness: Any) -> None:
    """With --no-access-log and no metrics, a finished request makes no record;
    with the access log on, it makes one."""
    for config, expected in ((ServerConfig(access_log=False), 0), (ServerConfig(), 1)):
        h = harness(config=config)
        records: list[Any] = []
        h.server.log_access = records.append
        conn = h.connect()
        conn.send(GET)
        respond(h, h.receive("http.request"))
        assert len(records) == expected
