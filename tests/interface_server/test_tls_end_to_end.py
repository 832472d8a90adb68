"""End-to-end over real TLS: HTTP/1.1, HTTP/2 and WebSocket from real clients.

One ``interfaceserver`` process serves the whole module, with a certificate
the test made: ``--ssl-keyfile``/``--ssl-certfile`` on ``-p`` and an
``-e ssl:...`` endpoint string on a second port, both offering h2 by ALPN.
A stand-in worker thread (``App``) answers on the SQLite layer: ``/echo``
describes the message it got, ``/stream/N`` streams N bytes in 64 KiB chunks,
``/hold/...`` is answered later by the test itself, and every
``http.disconnect`` is recorded. Clients: httpx (HTTP/1.1, and HTTP/2 with
the h2 extra), the ``h2`` library on a TLS socket for what httpx cannot do
(50 streams opened at once, a stream whose window stays shut, a reset
mid-response), and websockets for WSS.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import h2.errors
import h2.settings
import httpx
import pytest
from websockets.sync.client import connect as ws_connect

from asgi_spec import layer_from_url
from tests.interface_server.certificates import TestCA
from tests.interface_server.h2client import Streams, client_connection, request_headers
from tests.interface_server.test_end_to_end import Responder, ServerProcess, echo, free_port

pytestmark = pytest.mark.slow

CHUNK = 64 * 1024
PATTERN = bytes(range(256)) * (CHUNK // 256)


class App:
    """The stand-in worker's consumers (run on the Responder thread)."""

    def __init__(self) -> None:
        self.changed = threading.Condition()
        self.held: dict[str, str] = {}  # path -> reply channel, answered by the test
        self.disconnects: list[str] = []
        self.streamed: list[int] = []  # sizes of the /stream/ responses sent in full
        self.ws_schemes: list[str] = []

    def __call__(self, layer: Any, channel: str, message: dict[str, Any]) -> None:
        if channel == "http.disconnect":
            with self.changed:
                self.disconnects.append(message["reply_channel"])
                self.changed.notify_all()
        elif channel != "http.request":
            if channel == "websocket.connect":
                self.ws_schemes.append(message["scheme"])
            echo(layer, channel, message)
        elif message["path"].startswith("/hold/"):
            with self.changed:
                self.held[message["path"]] = message["reply_channel"]
                self.changed.notify_all()
        elif message["path"].startswith("/stream/"):
            self.stream(layer, message["reply_channel"], int(message["path"].split("/")[2]))
        else:
            self.describe(layer, message)

    def stream(self, layer: Any, reply: str, size: int) -> None:
        layer.send(reply, {"status": 200, "headers": [(b"content-type", b"application/x")],
                           "more_content": True})
        sent = 0
        while sent < size:
            piece = PATTERN[: min(CHUNK, size - sent)]
            sent += len(piece)
            layer.send(reply, {"content": piece, "more_content": sent < size})
        with self.changed:
            self.streamed.append(size)
            self.changed.notify_all()

    def describe(self, layer: Any, message: dict[str, Any]) -> None:
        body = message["body"]
        if "body_channel" in message:
            more = True
            while more:
                _, chunk = layer.receive([message["body_channel"]], block=True, timeout=5)
                assert chunk is not None, "a body chunk never came"
                body += chunk["content"]
                more = chunk["more_content"]
        headers = {name.decode(): value.decode() for name, value in message["headers"]}
        content = json.dumps({
            "path": message["path"], "http_version": message["http_version"],
            "scheme": message["scheme"], "method": message["method"],
            "host": headers.get("host"), "body_channel": "body_channel" in message,
            "body_sha256": hashlib.sha256(body).hexdigest(), "body_length": len(body),
        }).encode()
        layer.send(message["reply_channel"], {
            "status": 200, "headers": [(b"content-type", b"application/json")],
            "content": content})

    def wait(self, what: Callable[[], Any], timeout: float = 10) -> Any:
        with self.changed:
            assert self.changed.wait_for(what, timeout), "timed out waiting for the worker"
            return what()


class Stack:
    def __init__(self, tmp: Path) -> None:
        self.ca = TestCA(tmp)
        issued = self.ca.issue("localhost")
        self.ssl_port = free_port()
        self.server = ServerProcess(
            tmp, "--ssl-keyfile", str(issued.key), "--ssl-certfile", str(issued.cert),
            "--max-body-size", "4M", "-e",
            f"ssl:{self.ssl_port}:interface=127.0.0.1:privateKey={issued.key}"
            f":certKey={issued.cert}")
        self.port = self.server.port
        deadline = time.monotonic() + 20  # the -e port opens with -p, maybe a moment later
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.ssl_port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, self.server.err.read_text()
                time.sleep(0.05)
        self.app = App()
        self.responder = Responder(self.server.layer_url, self.app)
        self.responder.CHANNELS = [*Responder.CHANNELS, "http.disconnect"]
        self.responder.start()
        self.layer = layer_from_url(self.server.layer_url)  # the test's own replies

    def url(self, path: str, port: int | None = None) -> str:
        return f"https://localhost:{port or self.port}{path}"

    def client(self, http2: bool) -> httpx.Client:
        # httpx sets ALPN on the context it is given: one context per client.
        return httpx.Client(verify=self.ca.client_context(alpn=()), http2=http2,
                            http1=True, timeout=20)

    def stop(self) -> None:
        self.responder.stop()
        self.layer.close()
        self.server.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = Stack(tmp_path_factory.mktemp("tls"))
    yield running
    running.stop()


class RawH2:
    """An HTTP/2 client on a TLS socket, driven by the test."""

    def __init__(self, stack: Stack, window: int | None = None) -> None:
        raw = socket.create_connection(("127.0.0.1", stack.port), timeout=10)
        if window is not None:  # a small receive buffer fills sooner
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        self.sock = stack.ca.client_context(alpn=("h2",)).wrap_socket(
            raw, server_hostname="localhost")
        assert self.sock.selected_alpn_protocol() == "h2"
        self.conn = client_connection()
        if window is not None:  # flow control out of the way: only TCP holds data back
            self.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
            self.conn.increment_flow_control_window(window - 65535)
        self.streams = Streams()
        self.flush()

    def request(self, path: bytes) -> int:
        stream_id = self.conn.get_next_available_stream_id()
        self.conn.send_headers(stream_id, request_headers(path), end_stream=True)
        return stream_id

    def flush(self) -> None:
        self.sock.sendall(self.conn.data_to_send())

    def read_until(self, done: Callable[[], bool], timeout: float = 20) -> None:
        self.flush()
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, "timed out reading HTTP/2 frames"
            data = self.sock.recv(65536)
            assert data, "the server closed the connection"
            self.streams.handle(self.conn, self.conn.receive_data(data))
            self.flush()

    def close(self) -> None:
        self.sock.close()


def test_http11_and_http2_on_the_same_tls_ports(stack: Stack) -> None:
    """The same server answers HTTP/1.1 and HTTP/2 (by ALPN) on the --ssl-certfile port
    and on the -e ssl: port; the messages say scheme https and http_version 1.1 / 2,
    with host from :authority."""
    for port in (stack.port, stack.ssl_port):
        for http2, version, wire in ((False, "1.1", "HTTP/1.1"), (True, "2", "HTTP/2")):
            with stack.client(http2) as client:
                response = client.get(stack.url("/echo?x=1", port))
            assert response.status_code == 200 and response.http_version == wire
            seen = response.json()
            assert (seen["http_version"], seen["scheme"], seen["path"]) == (version, "https",
                                                                            "/echo")
            assert seen["host"] == f"localhost:{port}"


def test_request_body_over_h2_streams_through_the_body_channel(stack: Stack) -> None:
    """A 700 KiB upload over HTTP/2 reaches the worker whole, through body_channel."""
    body = bytes(range(256)) * 2800
    with stack.client(http2=True) as client:
        response = client.post(stack.url("/upload"), content=body)
    seen = response.json()
    assert response.http_version == "HTTP/2"
    assert seen["body_channel"] and seen["body_length"] == len(body)
    assert seen["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_fifty_concurrent_streams_on_one_connection(stack: Stack) -> None:
    """Fifty streams opened at once on one connection each become their own request and
    each gets its own answer."""
    client = RawH2(stack)
    try:
        ids = {client.request(f"/echo/{n}".encode()): n for n in range(50)}
        client.read_until(lambda: all(client.streams[i].done for i in ids))
        for stream_id, n in ids.items():
            stream = client.streams[stream_id]
            assert stream.status == 200 and stream.ended
            assert json.loads(bytes(stream.data))["path"] == f"/echo/{n}"
        assert client.streams.goaway is None
    finally:
        client.close()


def test_large_streamed_response_over_h2(stack: Stack) -> None:
    """A 6 MiB response streamed in 64 KiB chunks arrives whole and in order over HTTP/2,
    read as it comes."""
    size = 6 * 1024 * 1024
    received = bytearray()
    pieces = 0
    with stack.client(http2=True) as client, \
            client.stream("GET", stack.url(f"/stream/{size}")) as response:
        assert response.http_version == "HTTP/2" and response.status_code == 200
        for piece in response.iter_bytes():
            received += piece
            pieces += 1
    assert len(received) == size and pieces > 1
    assert bytes(received) == (PATTERN * (size // CHUNK + 1))[:size]


def test_a_stream_that_is_not_read_does_not_hold_up_the_others(stack: Stack) -> None:
    """Flow control: a stream whose window the client keeps shut gets no more than the
    window, while another stream on the connection is answered; opening the window
    lets the rest through."""
    client = RawH2(stack)
    try:
        size = 1024 * 1024
        slow = client.request(f"/stream/{size}".encode())
        client.streams.starved.add(slow)
        client.read_until(lambda: len(client.streams[slow].data) >= 65535)
        quick = client.request(b"/echo/quick")
        client.read_until(lambda: client.streams[quick].done)
        assert json.loads(bytes(client.streams[quick].data))["path"] == "/echo/quick"
        assert len(client.streams[slow].data) == 65535 and not client.streams[slow].done
        client.streams.starved.discard(slow)
        client.conn.increment_flow_control_window(size, slow)
        client.read_until(lambda: client.streams[slow].done)
        assert len(client.streams[slow].data) == size and client.streams[slow].ended
    finally:
        client.close()


def test_a_client_that_stops_reading_is_caught_up_when_it_reads_again(stack: Stack) -> None:
    """A client that does not read its socket while an 8 MiB response is written (its
    windows wide open, so only TCP holds the data back) gets all of it, in order, once
    it reads again."""
    size = 8 * 1024 * 1024
    client = RawH2(stack, window=2**31 - 1)
    try:
        stream = client.request(f"/stream/{size}".encode())
        client.flush()
        stack.app.wait(lambda: size in stack.app.streamed)  # all handed to the server
        client.read_until(lambda: client.streams[stream].done, timeout=30)
        assert client.streams[stream].ended and len(client.streams[stream].data) == size
        assert bytes(client.streams[stream].data) == (PATTERN * (size // CHUNK))[:size]
    finally:
        client.close()


def test_a_reset_stream_gets_http_disconnect_and_the_connection_goes_on(stack: Stack) -> None:
    """A client resets a stream mid-response: the worker gets http.disconnect for it,
    later chunks for it are dropped, and the other stream and a new one are served."""
    client = RawH2(stack)
    try:
        doomed = client.request(b"/hold/doomed")
        kept = client.request(b"/hold/kept")
        client.flush()
        held = stack.app.wait(lambda: {"/hold/doomed", "/hold/kept"} <= set(stack.app.held)
                              and dict(stack.app.held))
        stack.layer.send(held["/hold/doomed"], {"status": 200, "content": b"first part",
                                                "more_content": True})
        client.read_until(lambda: bytes(client.streams[doomed].data) == b"first part")
        client.conn.reset_stream(doomed, h2.errors.ErrorCodes.CANCEL)
        client.flush()
        stack.app.wait(lambda: held["/hold/doomed"] in stack.app.disconnects)
        stack.layer.send(held["/hold/doomed"], {"content": b"too late"})
        stack.layer.send(held["/hold/kept"], {"status": 200, "content": b"kept"})
        again = client.request(b"/echo/again")
        client.read_until(lambda: client.streams[kept].done and client.streams[again].done)
        assert bytes(client.streams[kept].data) == b"kept"
        assert json.loads(bytes(client.streams[again].data))["path"] == "/echo/again"
        assert bytes(client.streams[doomed].data) == b"first part"
        assert held["/hold/kept"] not in stack.app.disconnects
        assert client.streams.goaway is None
    finally:
        client.close()


@pytest.mark.parametrize("alpn", [("http/1.1",), ()])
def test_websocket_over_wss(stack: Stack, alpn: tuple[str, ...]) -> None:
    """WebSocket stays on HTTP/1.1 over TLS (ALPN http/1.1, or none): it echoes, and its
    websocket.connect says scheme wss."""
    context = stack.ca.client_context(alpn=alpn)
    before = len(stack.app.ws_schemes)
    with ws_connect(f"wss://localhost:{stack.port}/ws", ssl=context, open_timeout=10) as ws:
        ws.send("over tls")
        assert ws.recv(timeout=10) == "over tls"
    assert stack.app.ws_schemes[before:] == ["wss"]


def test_access_log_says_http2(stack: Stack) -> None:
    """The access log says HTTP/2 for HTTP/2 requests."""
    with stack.client(http2=True) as client:
        client.get(stack.url("/echo/logged"))
    deadline = time.monotonic() + 5
    while '"GET /echo/logged HTTP/2" 200' not in stack.server.out.read_text():
        assert time.monotonic() < deadline, stack.server.out.read_text()[-2000:]
        time.sleep(0.05)
