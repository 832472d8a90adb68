"""End-to-end graceful shutdown (SIGTERM), over SQLite and Redis.

A deploy must not lose work: the interface server stops accepting, lets the requests in
flight finish, closes WebSockets with 1001 and exits 0; a worker finishes the message it
is running, unregisters and exits 0.
"""

from __future__ import annotations

import contextlib
import http.client
import signal
import socket
import threading
import time
import uuid

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

from asgi_spec.registry import KIND_WORKER
from tests.e2e.clients import CLIENT_TIMEOUT, Reply, get, observed, request
from tests.e2e.processes import Stack, wait_until

pytestmark = pytest.mark.slow


Outcomes = dict[str, Reply | BaseException]


def start_slow_requests(port: int, count: int, seconds: float
                        ) -> tuple[list[str], Outcomes, list[threading.Thread]]:
    """``count`` concurrent ``/slow`` requests in threads: (ids, outcomes by id, threads)."""
    ids = [uuid.uuid4().hex[:8] for _ in range(count)]
    outcomes: Outcomes = {}

    def run(ident: str) -> None:
        try:
            outcomes[ident] = get(port, f"/slow?s={seconds}&id={ident}")
        except Exception as exc:  # reported by the test
            outcomes[ident] = exc

    threads = [threading.Thread(target=run, args=(ident,), daemon=True) for ident in ids]
    for thread in threads:
        thread.start()
    return ids, outcomes, threads


def test_sigterm_to_the_interface_server_under_load(stack: Stack) -> None:
    """SIGTERM while requests are running in workers, WebSockets are open and a keep-alive
    connection idles: the server stops accepting at once, every in-flight request still
    gets its full response, every WebSocket gets close 1001, the idle connection is
    closed, and the server exits 0 as soon as that is done (not at --graceful-timeout)
    and unregisters."""
    graceful, slow = 15.0, 2.0
    server = stack.server("--graceful-timeout", str(graceful))
    stack.worker("--threads", "3")
    idle = http.client.HTTPConnection("127.0.0.1", server.port, timeout=CLIENT_TIMEOUT)
    assert request(server.port, "GET", "/", connection=idle).status == 200
    with contextlib.ExitStack() as opened:
        opened.callback(idle.close)
        sockets = [opened.enter_context(ws_connect(server.ws_url("/ws/echo/"),
                                                   open_timeout=CLIENT_TIMEOUT))
                   for _ in range(3)]
        for n, ws in enumerate(sockets):
            ws.send(f"hello {n}")
            assert ws.recv(timeout=CLIENT_TIMEOUT) == f"hello {n}"
        ids, outcomes, threads = start_slow_requests(server.port, 3, slow)
        observed(stack.layer, ids)  # all three are inside a consumer now
        signalled = time.monotonic()
        server.send_signal(signal.SIGTERM)
        wait_until(lambda: not refuses_nothing(server.port), "the server to stop accepting",
                   timeout=1.0, explain=stack.explain)
        assert not outcomes, "the slow requests were over before the server stopped accepting"
        codes = []
        for ws in sockets:
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=CLIENT_TIMEOUT)
            codes.append(closed.value.rcvd.code if closed.value.rcvd else None)
        assert idle.sock is not None and idle.sock.recv(1) == b"", "idle keep-alive left open"
    for thread in threads:
        thread.join(CLIENT_TIMEOUT)
    assert codes == [1001, 1001, 1001], stack.explain()
    for ident in ids:
        reply = outcomes[ident]
        assert isinstance(reply, Reply), (ident, reply, stack.explain())
        assert (reply.status, reply.body) == (200, f"slow {ident}".encode())
    assert server.wait(CLIENT_TIMEOUT) == 0, stack.explain()
    assert time.monotonic() - signalled < slow + 2.0, "the drain waited for nothing"
    assert stack.layer.live_processes("interfaceserver") == {}


def refuses_nothing(port: int) -> bool:
    """``True`` while a new TCP connection to ``port`` is accepted."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


def test_sigterm_to_a_worker_finishes_its_message(stack: Stack) -> None:
    """SIGTERM to a worker inside a slow consumer: the consumer finishes and its client gets
    the full answer, the worker exits 0 and is no longer registered."""
    server = stack.server()
    worker = stack.worker()
    ids, outcomes, threads = start_slow_requests(server.port, 1, 1.0)
    assert observed(stack.layer, ids) == {ids[0]: worker.pid}
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(CLIENT_TIMEOUT) == 0, stack.explain()
    assert worker.name not in stack.layer.live_processes(KIND_WORKER)
    threads[0].join(CLIENT_TIMEOUT)
    reply = outcomes[ids[0]]
    assert isinstance(reply, Reply), (reply, stack.explain())
    assert (reply.status, reply.body) == (200, f"slow {ids[0]}".encode())
    assert "finishes its current messages" in worker.stderr()
