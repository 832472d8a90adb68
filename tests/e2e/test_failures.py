"""End-to-end failure model: no worker, a worker killed mid-load, Redis restarted mid-load.

What users must never see (DESIGN.md, "Failure model"): a request that hangs because no
worker runs, a hang or an empty reply when a worker dies or Redis blinks, a process that
needs a restart to recover, a request answered twice.
"""

from __future__ import annotations

import contextlib
import http.client
import select
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect as ws_connect

from asgi_spec import load_layer
from tests.e2e.clients import CLIENT_TIMEOUT, Reply, get, observed, request
from tests.e2e.processes import Stack, wait_until
from tests.redis_server import RedisServer, RedisServerError

pytestmark = pytest.mark.slow

#: The server's sweep period: timeouts are decided at most this late.
SWEEP = 1.0
#: The server re-reads the worker registry at most this often.
REGISTRY_REFRESH = 1.0


def test_no_worker_is_503_at_once_then_a_started_worker_serves(stack: Stack) -> None:
    """With no worker, HTTP gets 503 within 1 s saying nobody consumes http.request (and a
    WebSocket is rejected with 503); once a worker registers, the same request succeeds
    within the server's registry refresh."""
    server = stack.server()
    reply = get(server.port, "/echo/same")
    assert reply.status == 503, (reply.status, reply.body, stack.explain())
    assert reply.elapsed < 1.0
    assert b"no worker is consuming the http.request channel" in reply.body
    with pytest.raises(InvalidStatus) as rejected:
        ws_connect(server.ws_url("/ws/echo/"), open_timeout=CLIENT_TIMEOUT).close()
    assert rejected.value.response.status_code == 503
    assert b"no worker is consuming" in rejected.value.response.body

    worker = stack.worker()
    registered_at = time.monotonic()
    refused: list[Reply] = []

    def served() -> Reply | None:
        reply = get(server.port, "/echo/same")
        if reply.status != 200:
            refused.append(reply)
            return None
        return reply

    reply = wait_until(served, "a request to succeed once a worker runs", timeout=10,
                       interval=0.1, explain=stack.explain)
    assert time.monotonic() - registered_at < REGISTRY_REFRESH + 1.0
    assert reply.json()["pid"] == worker.pid
    assert all(r.status == 503 and b"no worker" in r.body for r in refused), refused


def test_worker_killed_mid_load_gives_a_clear_error_and_others_carry_on(stack: Stack) -> None:
    """A worker SIGKILLed inside a slow consumer: its client gets 504 within --http-timeout
    (plus one sweep), while another worker keeps answering every other request; a
    restarted worker serves again."""
    http_timeout = 2.0
    server = stack.server("--http-timeout", str(http_timeout))
    victim = stack.worker(name="victim")
    slow_id = uuid.uuid4().hex[:8]
    slow: dict[str, Any] = {}

    def slow_client() -> None:
        slow["reply"] = get(server.port, f"/slow?s=30&id={slow_id}")

    slow_thread = threading.Thread(target=slow_client, daemon=True)
    slow_thread.start()
    assert observed(stack.layer, [slow_id]) == {slow_id: victim.pid}
    survivor = stack.worker(name="survivor")

    stop_load = threading.Event()
    load: list[Reply | BaseException] = []

    def load_client() -> None:
        while not stop_load.is_set():
            try:
                load.append(get(server.port, "/echo/load"))
            except Exception as exc:  # reported below
                load.append(exc)

    loaders = [threading.Thread(target=load_client, daemon=True) for _ in range(3)]
    for thread in loaders:
        thread.start()
    wait_until(lambda: len(load) >= 10, "some load to be served", explain=stack.explain)
    assert victim.kill() == -9
    killed_at = len(load)
    wait_until(lambda: len(load) >= killed_at + 10, "load served after the kill",
               explain=stack.explain)
    slow_thread.join(http_timeout + SWEEP + 5)
    stop_load.set()
    for thread in loaders:
        thread.join(CLIENT_TIMEOUT)

    reply = slow["reply"]
    assert reply.status == 504, (reply.status, reply.body, stack.explain())
    assert b"did not respond within" in reply.body
    assert http_timeout <= reply.elapsed <= http_timeout + SWEEP + 0.5
    bad = [r for r in load if not isinstance(r, Reply) or r.status != 200]
    assert not bad, bad[:5]
    assert {r.json()["pid"] for r in load if isinstance(r, Reply)} == {survivor.pid}

    restarted = stack.worker(name="victim")
    assert survivor.stop() == 0
    reply = get(server.port, "/echo/after")
    assert reply.status == 200, (reply.body, stack.explain())
    assert reply.json()["pid"] == restarted.pid


@pytest.mark.parametrize("layer_url", ["sqlite"], indirect=True)
def test_stream_whose_worker_dies_is_cut_not_left_hanging(stack: Stack) -> None:
    """A streamed response whose worker is SIGKILLed mid-stream is cut (the client sees an
    incomplete body) within --http-timeout (plus one sweep), never left hanging."""
    http_timeout = 1.0
    server = stack.server("--http-timeout", str(http_timeout))
    worker = stack.worker()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=CLIENT_TIMEOUT)
    try:
        conn.request("GET", "/stream?n=100&interval=0.2")
        response = conn.getresponse()
        assert response.status == 200, stack.explain()
        assert response.readline().startswith(b"0 ")
        worker.kill()
        killed = time.monotonic()
        with pytest.raises((http.client.IncompleteRead, ConnectionResetError)):
            response.read()  # a cut connection (FIN or RST), not a clean end
    finally:
        conn.close()
    assert time.monotonic() - killed <= http_timeout + SWEEP + 0.5


# -- Redis stopped and restarted mid-load ---------------------------------------------


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server for this test alone: it is stopped and restarted on the same port."""
    server = RedisServer()
    try:
        server.start()
    except RedisServerError as exc:
        server.cleanup()
        pytest.fail(f"cannot start redis-server: {exc}", pytrace=False)
    yield server
    server.cleanup()


@pytest.fixture
def redis_stack(own_redis: RedisServer, tmp_path: Path,
                request: pytest.FixtureRequest) -> Iterator[Stack]:
    url = f"{own_redis.url}?prefix=e2e-restart:"
    layer = load_layer(url)
    stack = Stack(url, tmp_path, layer)
    yield stack
    stack.stop_all()
    layer.close()
    if any(getattr(getattr(request.node, f"e2e_report_{when}", None), "failed", False)
           for when in ("setup", "call")):
        print(stack.explain())


class LoadClient(threading.Thread):
    """Requests ``/echo/load?id=<name>-<n>`` one after another on a keep-alive connection
    and sorts every outcome: served (the answer names this very request), refused (503
    with a body), lost (504), or a failure (anything else: a hang, an empty reply, an
    answer to another request, bytes nobody asked for)."""

    #: Seconds between two requests: a bounded load (tens of requests a second).
    pace = 0.05

    def __init__(self, name: str, port: int) -> None:
        super().__init__(daemon=True)
        self.name, self.port = name, port
        self.stopping = threading.Event()
        self.outcomes: list[tuple[float, str, Reply | None]] = []  # (time, kind, reply)
        self.failures: list[str] = []

    def count(self, kind: str, since: float = 0.0) -> int:
        return sum(1 for at, k, _ in self.outcomes if k == kind and at >= since)

    def first(self, kind: str, since: float) -> float | None:
        return next((at for at, k, _ in self.outcomes if k == kind and at >= since), None)

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=CLIENT_TIMEOUT)
        n = 0
        while not self.stopping.is_set():
            n += 1
            ident = f"{self.name}-{n}"
            if conn.sock is not None and select.select([conn.sock], [], [], 0)[0]:
                if conn.sock.recv(1, socket.MSG_PEEK):
                    self.failures.append(f"unrequested bytes before {ident}")
                conn.close()
            try:
                reply = request(self.port, "GET", f"/echo/load?id={ident}", connection=conn)
            except Exception as exc:
                self.failures.append(f"{ident}: {type(exc).__name__}: {exc}")
                conn.close()
                continue
            self.outcomes.append((time.monotonic(), self.classify(ident, reply), reply))
            self.stopping.wait(self.pace)
        conn.close()

    def classify(self, ident: str, reply: Reply) -> str:
        if reply.status == 200:
            if reply.json()["query_string"] != f"id={ident}":
                self.failures.append(f"{ident} got the answer to {reply.json()['query_string']}")
            return "served"
        if reply.status == 503 and (b"unavailable" in reply.body or b"no worker" in reply.body):
            return "refused"
        if reply.status == 504 and b"did not respond" in reply.body:
            return "lost"
        self.failures.append(f"{ident}: unexpected {reply.status} {reply.body[:200]!r}")
        return "failed"


def test_redis_restart_mid_load_is_survived_without_restarting_anything(
        own_redis: RedisServer, redis_stack: Stack) -> None:
    """Redis stopped under load: HTTP answers 503 with a body (never a hang or an empty
    reply), an open WebSocket that sends is closed with 1013, a new one is refused with
    503, and both processes log it; Redis back (empty, registry included): server and
    worker recover by themselves and stay recovered (no "no worker" refusals while the
    worker re-registers), only requests in flight at the cut are lost (504), and no
    request is answered twice."""
    http_timeout = 2.0
    server = redis_stack.server("--http-timeout", str(http_timeout))
    worker = redis_stack.worker("--threads", "2")
    clients = [LoadClient(f"c{n}", server.port) for n in range(3)]
    with contextlib.ExitStack() as running:
        ws = running.enter_context(ws_connect(server.ws_url("/ws/echo/"),
                                              open_timeout=CLIENT_TIMEOUT))
        for client in clients:
            client.start()
            running.callback(client.join, CLIENT_TIMEOUT + 5)
            running.callback(client.stopping.set)
        ws.send("before")
        assert ws.recv(timeout=CLIENT_TIMEOUT) == "before"
        wait_until(lambda: all(c.count("served") >= 3 for c in clients), "load to be served",
                   explain=redis_stack.explain)
        own_redis.stop()
        down_at = time.monotonic()
        ws.send("during")
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=CLIENT_TIMEOUT)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
        with pytest.raises(InvalidStatus) as rejected:
            ws_connect(server.ws_url("/ws/echo/"), open_timeout=CLIENT_TIMEOUT).close()
        assert rejected.value.response.status_code == 503
        assert b"unavailable" in rejected.value.response.body
        wait_until(lambda: all(c.count("refused", down_at) >= 3 for c in clients),
                   "503s while Redis is down", timeout=http_timeout + 10,
                   explain=redis_stack.explain)
        own_redis.start()
        up_at = time.monotonic()
        wait_until(lambda: all(c.count("served", up_at) >= 20 for c in clients),
                   "load to be served again after Redis came back", timeout=20,
                   explain=redis_stack.explain)
    with ws_connect(server.ws_url("/ws/echo/"), open_timeout=CLIENT_TIMEOUT) as ws:
        ws.send("after")
        assert ws.recv(timeout=CLIENT_TIMEOUT) == "after"
    assert server.running and worker.running, redis_stack.explain()
    failures = [f for c in clients for f in c.failures]
    assert not failures, failures[:10]
    kinds = Counter(k for c in clients for _, k, _ in c.outcomes)
    slowest = max(r.elapsed for c in clients for _, _, r in c.outcomes if r)
    assert slowest < http_timeout + SWEEP + 0.5, f"a request took {slowest:.1f} s"
    assert kinds["refused"] >= 3 * len(clients) and kinds["served"] >= 23 * len(clients)
    recovered = [c.first("served", up_at) for c in clients]
    print(f"Redis restart: {dict(kinds)}; served again "
          f"{max(t for t in recovered if t) - up_at:.2f} s after Redis returned")
    for client, since in zip(clients, recovered, strict=True):
        assert since is not None
        late = [(round(at - since, 2), k, r.body if r else None)
                for at, k, r in client.outcomes if at > since and k != "served"]
        assert not late, f"{client.name} was refused after recovering: {late[:5]}"
    assert kinds["lost"] <= len(clients), f"more requests lost than were in flight: {kinds}"
    assert "channel layer unavailable" in server.stderr()
    assert "unreachable" in worker.stderr()
