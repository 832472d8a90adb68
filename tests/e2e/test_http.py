"""End-to-end HTTP: real ``interfaceserver`` + real ``runworker`` over SQLite and Redis.

Request/response (status, headers, query string, bodies inline and through a
``body_channel``), a response streamed over time, server-sent events fed by
other requests, and a long-poll answered by a group send.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import select
import socket
import time
import uuid

import pytest

from tests.e2e.clients import CLIENT_TIMEOUT, get, request
from tests.e2e.conftest import App
from tests.e2e.processes import wait_until

pytestmark = pytest.mark.slow

#: The server's default body chunk size (``ServerConfig.body_chunk_size``).
CHUNK = 256 * 1024


def token() -> str:
    return uuid.uuid4().hex[:12]


def test_request_and_response_carry_status_headers_path_and_query(app: App) -> None:
    """The worker sees method, decoded path, raw query string and headers; the client gets
    the worker's status and every response header, repeated ones included, twice on one
    keep-alive connection."""
    conn = http.client.HTTPConnection("127.0.0.1", app.port, timeout=CLIENT_TIMEOUT)
    try:
        for n in range(2):
            reply = request(app.port, "GET", f"/echo/caf%C3%A9?x={n}&y=%20two&status=201",
                            headers={"X-Custom": f"value {n}"}, connection=conn)
            assert reply.status == 201, (reply.body, app.explain())
            assert reply.header("content-type") == "application/json"
            assert reply.all("x-e2e-multi") == ["one", "two"]
            seen = reply.json()
            assert reply.header("x-e2e-worker") == str(seen["pid"])
            assert seen["method"] == "GET"
            assert seen["path"] == "/echo/café"
            assert seen["query_string"] == f"x={n}&y=%20two&status=201"
            assert seen["headers"]["x-custom"] == [f"value {n}"]
            assert seen["body_length"] == 0
    finally:
        conn.close()


def test_small_post_body_travels_inline(app: App) -> None:
    """A body smaller than one chunk arrives whole inside ``http.request``."""
    body = b"name=switchboard&x=" + os.urandom(100).hex().encode()
    reply = request(app.port, "POST", "/echo/form", body=body,
                    headers={"content-type": "application/x-www-form-urlencoded"})
    assert reply.status == 200, (reply.body, app.explain())
    seen = reply.json()
    assert seen["method"] == "POST"
    assert seen["body_length"] == len(body)
    assert seen["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert seen["body_chunks"] == 0


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_multi_mib_upload_streams_through_the_body_channel(app: App, framing: str) -> None:
    """A 3 MiB upload (Content-Length or chunked) reaches the consumer intact, the part past
    the first chunk on a ``body_channel`` in bounded chunks."""
    body = os.urandom(3 * 1024 * 1024 + 12345)
    sent = body if framing == "content-length" else (
        body[i:i + 100_000] for i in range(0, len(body), 100_000))
    reply = request(app.port, "PUT", "/echo/upload", body=sent,
                    headers={"content-type": "application/octet-stream"})
    assert reply.status == 200, (reply.body[:500], app.explain())
    seen = reply.json()
    assert seen["body_length"] == len(body)
    assert seen["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert seen["body_chunks"] == -(-len(body) // CHUNK) - 1


def test_streamed_response_is_read_while_it_is_still_being_made(app: App) -> None:
    """Chunks are written as the worker sends them: the client reads the first one before
    the worker has even made the last one."""
    count, interval = 5, 0.15
    conn = http.client.HTTPConnection("127.0.0.1", app.port, timeout=CLIENT_TIMEOUT)
    try:
        conn.request("GET", f"/stream?n={count}&interval={interval}")
        response = conn.getresponse()
        assert response.status == 200, app.explain()
        assert response.getheader("transfer-encoding") == "chunked"
        lines: list[tuple[int, float, float]] = []  # (index, made at, read at)
        while True:
            line = response.readline()
            if not line:
                break
            index, made = line.split()
            lines.append((int(index), float(made), time.time()))
    finally:
        conn.close()
    assert [index for index, _, _ in lines] == list(range(count))
    first_read, last_made = lines[0][2], lines[-1][1]
    assert first_read < last_made, (
        f"the first chunk was read {first_read - last_made:.3f} s after the last was made: "
        "the response was buffered, not streamed")


def test_server_sent_events_arrive_one_by_one(app: App) -> None:
    """An event stream opens with its head alone, then gets each event published by another
    request as it is published, and ends (leaving its group) when told to."""
    topic = token()
    conn = http.client.HTTPConnection("127.0.0.1", app.port, timeout=CLIENT_TIMEOUT)
    try:
        conn.request("GET", f"/events/{topic}", headers={"accept": "text/event-stream"})
        stream = conn.getresponse()  # returns once the head alone has arrived
        assert stream.status == 200, app.explain()
        assert stream.getheader("content-type") == "text/event-stream"
        for n in range(3):
            published = get(app.port, f"/events/{topic}/publish?data=event{n}")
            assert published.status == 200, (published.body, app.explain())
            assert published.json()["listeners"] == 1
            assert stream.readline() == f"data: event{n}\n".encode()
            assert stream.readline() == b"\n"
        assert get(app.port, f"/events/{topic}/publish?end=1").status == 200
        assert stream.read() == b""
        assert stream.isclosed()
    finally:
        conn.close()
    assert get(app.port, f"/events/{topic}/publish?data=late").json()["listeners"] == 0


def test_long_poll_is_answered_by_a_group_send_from_another_request(app: App) -> None:
    """A long-poll request is held open with no answer until another request publishes to its
    group; it then gets exactly what was published."""
    topic, payload = token(), f"news {token()}".encode()
    group = f"poll-{topic}"
    conn = http.client.HTTPConnection("127.0.0.1", app.port, timeout=CLIENT_TIMEOUT)
    try:
        conn.request("GET", f"/poll/{topic}")
        wait_until(lambda: app.layer.group_channels(group), "the long-poll to wait in its group",
                   explain=app.explain)
        readable, _, _ = select.select([conn.sock], [], [], 0)
        assert not readable, "the long-poll was answered before anything was published"
        published = request(app.port, "POST", f"/poll/{topic}/publish", body=payload)
        assert published.status == 200, (published.body, app.explain())
        assert published.json()["waiting"] == 1
        answer = conn.getresponse()
        assert (answer.status, answer.read()) == (200, payload)
    finally:
        conn.close()
    nobody = request(app.port, "POST", f"/poll/{topic}/publish", body=b"late")
    assert nobody.status == 409, "the answered long-poll should have left its group"


def test_long_poll_that_hangs_up_leaves_its_group(app: App) -> None:
    """A client that gives up on a long-poll causes an ``http.disconnect`` that takes its
    reply channel out of the group."""
    topic = token()
    group = f"poll-{topic}"
    conn = http.client.HTTPConnection("127.0.0.1", app.port, timeout=CLIENT_TIMEOUT)
    conn.request("GET", f"/poll/{topic}")
    wait_until(lambda: app.layer.group_channels(group), "the long-poll to wait in its group",
               explain=app.explain)
    conn.close()
    wait_until(lambda: not app.layer.group_channels(group),
               "the disconnected long-poll to leave its group", timeout=10, explain=app.explain)


def test_pipelined_requests_are_answered_in_order(app: App) -> None:
    """Three requests written at once on one connection get their three answers in request
    order, even though a two-thread worker may finish them in any order."""
    paths = [f"/echo/pipelined/{n}" for n in range(3)]
    raw = b"".join(f"GET {path} HTTP/1.1\r\nHost: e2e\r\n\r\n".encode() for path in paths)
    with socket.create_connection(("127.0.0.1", app.port), timeout=CLIENT_TIMEOUT) as sock:
        sock.sendall(raw)
        reader = sock.makefile("rb")
        seen = []
        for _ in paths:
            status = reader.readline()
            assert status.startswith(b"HTTP/1.1 200 "), (status, app.explain())
            headers = dict(line.rstrip(b"\r\n").lower().split(b": ", 1)
                           for line in iter(reader.readline, b"\r\n"))
            body = reader.read(int(headers[b"content-length"]))
            seen.append(json.loads(body)["path"])
    assert seen == paths
