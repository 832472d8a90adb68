"""End-to-end: the real ``interfaceserver`` process, real sockets, the SQLite layer.

A responder thread in the test stands in for a worker: it registers in the
layer registry as kind "worker" (consuming http.request and websocket.*) and
answers from its own layer connection, exactly as a worker process would.
These tests wait on real time (process start-up), so they are marked slow.
"""

from __future__ import annotations

import http.client
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

from asgi_spec import layer_from_url

pytestmark = pytest.mark.slow

Handler = Callable[[Any, str, dict[str, Any]], None]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    def __init__(self, tmp_path: Path, *args: str, layer_url: str | None = None) -> None:
        self.port = free_port()
        self.layer_url = layer_url or f"sqlite:///{tmp_path}/layer.db"
        self.out = tmp_path / "stdout.log"
        self.err = tmp_path / "stderr.log"
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "interface_server", "--layer", self.layer_url,
                 "-p", str(self.port), *args], stdout=out, stderr=err, cwd=tmp_path)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"interfaceserver exited: {self.err.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        pytest.fail(f"interfaceserver did not listen: {self.err.read_text()}")

    def request(self, method: str, path: str, body: bytes | None = None
                ) -> http.client.HTTPResponse:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        conn.request(method, path, body=body)
        return conn.getresponse()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Responder(threading.Thread):
    """A stand-in worker: registers, then answers every message with ``handler``."""

    CHANNELS = ["http.request", "websocket.connect", "websocket.receive",
                "websocket.disconnect"]

    def __init__(self, layer_url: str, handler: Handler) -> None:
        super().__init__(daemon=True)
        self.layer = layer_from_url(layer_url)
        self.handler = handler
        self.stopping = threading.Event()
        self.layer.register_process("worker", "test-responder",
                                    {"channels": ["http.request", "websocket.*"]}, ttl=60)

    def run(self) -> None:
        while not self.stopping.is_set():
            channel, message = self.layer.receive(self.CHANNELS, block=True, timeout=0.2)
            if channel is not None:
                self.handler(self.layer, channel, message)

    def stop(self) -> None:
        self.stopping.set()
        self.join(5)
        self.layer.unregister_process("worker", "test-responder")
        self.layer.close()


def echo(layer: Any, channel: str, message: dict[str, Any]) -> None:
    reply = message.get("reply_channel")
    if channel == "http.request":
        body = b"hello " + message["path"].encode() + b" " + message["body"]
        layer.send(reply, {"status": 200, "headers": [(b"content-type", b"text/plain")],
                           "content": body})
    elif channel == "websocket.connect":
        layer.send(reply, {"accept": True})
    elif channel == "websocket.receive":
        layer.send(reply, {k: message[k] for k in ("text", "bytes") if k in message})


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    started: list[ServerProcess] = []

    def start(*args: str, layer_url: str | None = None) -> ServerProcess:
        process = ServerProcess(tmp_path, *args, layer_url=layer_url)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


@pytest.fixture
def responder() -> Iterator[Callable[[str, Handler], Responder]]:
    running: list[Responder] = []

    def start(layer_url: str, handler: Handler = echo) -> Responder:
        thread = Responder(layer_url, handler)
        thread.start()
        running.append(thread)
        return thread

    yield start
    for thread in running:
        thread.stop()


def test_no_worker_is_503_at_once(server: Any) -> None:
    """With no worker registered, a request gets 503 saying so, without waiting."""
    srv = server()
    response = srv.request("GET", "/")
    assert response.status == 503
    assert b"no worker is consuming the http.request channel" in response.read()


def test_request_and_response(server: Any, responder: Any) -> None:
    """A request travels through the layer to the worker and its answer comes back."""
    srv = server()
    responder(srv.layer_url)
    response = srv.request("POST", "/caf%C3%A9", body=b"data")
    assert response.status == 200
    assert response.read() == "hello /café data".encode()


def test_streaming_response(server: Any, responder: Any) -> None:
    """Chunks are written as they arrive: the client reads the first before the last exists."""
    srv = server()
    first_read = threading.Event()

    def stream(layer: Any, channel: str, message: dict[str, Any]) -> None:
        reply = message["reply_channel"]
        layer.send(reply, {"status": 200, "headers": [(b"content-type", b"text/event-stream")],
                           "more_content": True})
        layer.send(reply, {"content": b"data: first\n\n", "more_content": True})
        first_read.wait(10)
        layer.send(reply, {"content": b"data: last\n\n", "more_content": False})

    responder(srv.layer_url, stream)
    response = srv.request("GET", "/events")
    assert response.status == 200
    assert response.getheader("transfer-encoding") == "chunked"
    assert response.read1(100) == b"data: first\n\n"
    first_read.set()
    assert response.read() == b"data: last\n\n"


def test_websocket_echo_including_empty_messages(server: Any, responder: Any) -> None:
    """A WebSocket echoes text and bytes, empty ones too."""
    srv = server()
    responder(srv.layer_url)
    with ws_connect(f"ws://127.0.0.1:{srv.port}/echo", open_timeout=10) as ws:
        for message in ("hello", "", b"\x00\x01", b""):
            ws.send(message)
            assert ws.recv(timeout=10) == message


def test_websocket_oversize_closes_1009(server: Any, responder: Any) -> None:
    """A message over --max-ws-message-size gets close code 1009, not a dropped socket."""
    srv = server("--max-ws-message-size", "1K")
    responder(srv.layer_url)
    with ws_connect(f"ws://127.0.0.1:{srv.port}/echo", open_timeout=10) as ws:
        ws.send(b"x" * 1024)
        assert ws.recv(timeout=10) == b"x" * 1024
        ws.send(b"x" * 1025)
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1009


def test_sigterm_drains_and_exits_0(server: Any, responder: Any) -> None:
    """SIGTERM: the in-flight request still completes, WebSockets get 1001 and their
    websocket.disconnect is sent, and the process exits 0."""
    srv = server("--graceful-timeout", "10")
    got_request = threading.Event()
    release = threading.Event()
    disconnects: list[int] = []

    def slow(layer: Any, channel: str, message: dict[str, Any]) -> None:
        if channel == "http.request" and message["path"] == "/slow":
            got_request.set()
            release.wait(10)
            layer.send(message["reply_channel"], {"status": 200, "content": b"done"})
        elif channel == "websocket.disconnect":
            disconnects.append(message["code"])
        else:
            echo(layer, channel, message)

    responder(srv.layer_url, slow)
    with ws_connect(f"ws://127.0.0.1:{srv.port}/echo", open_timeout=10) as ws:
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
        conn.request("GET", "/slow")
        assert got_request.wait(10)
        srv.proc.send_signal(signal.SIGTERM)
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
    release.set()
    response = conn.getresponse()
    assert (response.status, response.read()) == (200, b"done")
    assert srv.proc.wait(15) == 0
    deadline = time.monotonic() + 5
    while not disconnects and time.monotonic() < deadline:
        time.sleep(0.05)
    assert disconnects == [1001]


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_each_event_loop_serves_and_stops(server: Any, responder: Any, redis_url: str,
                                          loop: str) -> None:
    """On either --loop, over the Redis layer (whose asyncio client shares the loop):
    HTTP and WebSocket round trips, then SIGTERM exits 0; the log names the loop."""
    pytest.importorskip(loop)
    layer_url = redis_url.rsplit("/", 1)[0] + "/7"  # a database of its own
    redis = layer_from_url(layer_url)
    redis.flush()
    redis.close()
    srv = server("--loop", loop, "-v", "2", layer_url=layer_url)
    responder(srv.layer_url)
    response = srv.request("POST", "/loop", body=loop.encode())
    assert (response.status, response.read()) == (200, f"hello /loop {loop}".encode())
    with ws_connect(f"ws://127.0.0.1:{srv.port}/echo", open_timeout=10) as ws:
        for message in ("text", b"bytes" * 1000):
            ws.send(message)
            assert ws.recv(timeout=10) == message
    srv.proc.send_signal(signal.SIGTERM)
    assert srv.proc.wait(15) == 0
    assert f"event loop: {loop}" in srv.err.read_text()


def test_bad_layer_fails_fast(tmp_path: Path) -> None:
    """An unusable layer stops the command at once with the layer's error text."""
    result = subprocess.run(
        [sys.executable, "-m", "interface_server", "--layer", "bogus://nowhere"],
        capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert result.returncode == 1
    assert "cannot use the channel layer" in result.stderr
    assert "bogus" in result.stderr


def test_port_in_use_fails(server: Any, tmp_path: Path) -> None:
    """A port that is taken is an error and a non-zero exit, not a hang."""
    srv = server()
    result = subprocess.run(
        [sys.executable, "-m", "interface_server", "--layer", srv.layer_url,
         "-p", str(srv.port)], capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert result.returncode == 1
    assert "cannot listen" in result.stderr


def test_second_signal_exits_at_once(server: Any, responder: Any) -> None:
    """A second SIGTERM during the drain exits at once (status 1) instead of waiting."""
    srv = server("--graceful-timeout", "300")
    got_request = threading.Event()

    def never_answer(layer: Any, channel: str, message: dict[str, Any]) -> None:
        got_request.set()

    responder(srv.layer_url, never_answer)
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    conn.request("GET", "/hang")
    assert got_request.wait(10)
    srv.proc.send_signal(signal.SIGTERM)
    time.sleep(1.5)  # past the echo window: this is a deliberate second signal
    assert srv.proc.poll() is None, "the drain should still be waiting for /hang"
    srv.proc.send_signal(signal.SIGTERM)
    assert srv.proc.wait(20) == 1


def test_ctrl_c_then_manager_sigterm_is_one_graceful_stop(server: Any, responder: Any) -> None:
    """SIGINT followed at once by SIGTERM (Ctrl-C under honcho or systemd) is one
    request: the in-flight request is still answered and the server exits 0."""
    srv = server("--graceful-timeout", "30")
    pending: list[Any] = []

    def answer_later(layer: Any, channel: str, message: dict[str, Any]) -> None:
        if channel == "http.request":
            pending.append((layer, message["reply_channel"]))

    responder(srv.layer_url, answer_later)
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    conn.request("GET", "/slow")
    deadline = time.monotonic() + 10
    while not pending and time.monotonic() < deadline:
        time.sleep(0.02)
    srv.proc.send_signal(signal.SIGINT)
    srv.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    assert srv.proc.poll() is None, "the echoed signal must not cut the drain short"
    layer, reply_channel = pending[0]
    layer.send(reply_channel, {"status": 200, "content": b"done"})
    assert conn.getresponse().read() == b"done"
    assert srv.proc.wait(20) == 0


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    key_path, cert_path = tmp_path / "key.pem", tmp_path / "cert.pem"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


def test_tls_endpoint_serves_https_and_wss(server: Any, responder: Any,
                                           tmp_path: Path) -> None:
    """An ssl: endpoint (-e) serves HTTPS and WSS; messages say scheme https / wss."""
    import ssl

    key, cert = self_signed(tmp_path)
    tls_port = free_port()
    srv = server("-e", f"ssl:{tls_port}:interface=127.0.0.1:privateKey={key}:certKey={cert}")
    schemes: list[str] = []

    def record(layer: Any, channel: str, message: dict[str, Any]) -> None:
        if "scheme" in message:
            schemes.append(message["scheme"])
        echo(layer, channel, message)

    responder(srv.layer_url, record)
    context = ssl.create_default_context(cafile=str(cert))
    context.check_hostname = False
    conn = http.client.HTTPSConnection("127.0.0.1", tls_port, timeout=10, context=context)
    conn.request("GET", "/secure")
    assert conn.getresponse().read() == b"hello /secure "
    with ws_connect(f"wss://127.0.0.1:{tls_port}/ws", ssl=context, open_timeout=10) as ws:
        ws.send("over tls")
        assert ws.recv(timeout=10) == "over tls"
    assert schemes == ["https", "wss"]


def test_reload_restarts_the_server_when_code_changes(server: Any, tmp_path: Path) -> None:
    """``--reload`` serves through a child that is replaced (a new server id in the
    registry) when a .py file under the working directory changes; SIGTERM ends both."""
    process = server("--reload")
    layer = layer_from_url(process.layer_url)

    def server_ids() -> set[str]:
        return set(layer.live_processes("interfaceserver"))

    deadline = time.monotonic() + 20
    while not server_ids() and time.monotonic() < deadline:
        time.sleep(0.1)
    first = server_ids()
    assert first, "the server never registered"
    (tmp_path / "app_module.py").write_text("CHANGED = True\n")
    while not server_ids() - first and time.monotonic() < deadline + 20:
        time.sleep(0.1)
    assert server_ids() - first, "no new server after the change"
    assert process.request("GET", "/").status == 503  # serving again (no worker: 503)
    process.proc.send_signal(signal.SIGTERM)
    assert process.proc.wait(30) == 0
    layer.close()
