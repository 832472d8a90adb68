"""End-to-end WebSocket: echo, a close chosen by the consumer, and group chat across two
interface servers and two workers, over SQLite and Redis, with the ``websockets`` client."""

from __future__ import annotations

import contextlib
import threading
import uuid

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

from tests.e2e.conftest import App
from tests.e2e.processes import Stack

pytestmark = pytest.mark.slow

TIMEOUT = 10.0


def test_echo_text_and_binary_including_empty_messages(app: App) -> None:
    """Every frame comes back unchanged, as text or binary as it was sent: an empty text
    and an empty binary message too (each an event of its own, never dropped). (One frame
    at a time: a worker with two threads may answer two pending frames in either order.)"""
    frames: list[str | bytes] = ["hello", "", b"\x00\x01\xff", b"", "caf\u00e9 \u2603",
                                 b"x" * 70_000]
    received: list[str | bytes] = []
    with ws_connect(f"ws://127.0.0.1:{app.port}/ws/echo/", open_timeout=TIMEOUT) as ws:
        for frame in frames:
            ws.send(frame)
            received.append(ws.recv(timeout=TIMEOUT))
    assert [type(f) for f in received] == [type(f) for f in frames], app.explain()
    assert received == frames


@pytest.mark.parametrize("code", [1000, 4321])
def test_consumer_closes_the_socket_with_its_code(app: App, code: int) -> None:
    """A consumer's ``send(text=..., close=code)`` delivers the frame, then a close frame
    with that code."""
    with ws_connect(f"ws://127.0.0.1:{app.port}/ws/close/", open_timeout=TIMEOUT) as ws:
        ws.send("still open?")
        assert ws.recv(timeout=TIMEOUT) == "still open?"
        ws.send(f"close {code}")
        assert ws.recv(timeout=TIMEOUT) == "bye"
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=TIMEOUT)
    assert closed.value.rcvd is not None, app.explain()
    assert closed.value.rcvd.code == code


class ChatClient(threading.Thread):
    """Sends its messages one at a time (the next once its previous one came back) and
    records every broadcast it receives, until it has seen ``expected`` of them."""

    def __init__(self, ws: ClientConnection, name: str, count: int, expected: int) -> None:
        super().__init__(daemon=True)
        self.ws, self.name, self.count, self.expected = ws, name, count, expected
        self.received: list[tuple[str, str]] = []  # (worker pid, text)
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            sent = 0
            self.ws.send(f"{self.name}:{sent}")
            while len(self.received) < self.expected:
                pid, _, text = self.ws.recv(timeout=TIMEOUT).partition("|")
                self.received.append((pid, text))
                if text == f"{self.name}:{sent}" and sent + 1 < self.count:
                    sent += 1
                    self.ws.send(f"{self.name}:{sent}")
        except BaseException as exc:  # reported by the test
            self.error = exc


def test_group_chat_across_two_servers_and_two_workers(stack: Stack) -> None:
    """Four clients on two interface servers, relayed by two workers: every client receives
    every broadcast exactly once, all in the same order, each sender's in its own order,
    and both workers relayed some."""
    servers = [stack.server(name=f"server-{x}", wait=False) for x in "ab"]
    workers = [stack.worker(name=f"worker-{x}", wait=False) for x in "ab"]
    for server in servers:
        server.wait_ready()
    for worker in workers:
        worker.wait_ready(stack.layer)
    room, clients, per_client = uuid.uuid4().hex[:10], 4, 10
    total = clients * per_client
    with contextlib.ExitStack() as opened:
        sockets = [opened.enter_context(ws_connect(servers[n % 2].ws_url(f"/ws/chat/{room}/"),
                                                   open_timeout=TIMEOUT))
                   for n in range(clients)]
        assert len(stack.layer.group_channels(f"chat-{room}")) == clients
        chatters = [ChatClient(ws, f"c{n}", per_client, total) for n, ws in enumerate(sockets)]
        for chatter in chatters:
            chatter.start()
        for chatter in chatters:
            chatter.join(30)
    for chatter in chatters:
        assert chatter.error is None, f"{chatter.name}: {chatter.error!r}\n{stack.explain()}"
        assert len(chatter.received) == total
    orders = [[text for _, text in chatter.received] for chatter in chatters]
    assert sorted(orders[0]) == sorted(f"c{n}:{k}" for n in range(clients)
                                       for k in range(per_client))
    for order in orders[1:]:
        assert order == orders[0], "clients saw the broadcasts in different orders"
    for n in range(clients):
        mine = [text for text in orders[0] if text.startswith(f"c{n}:")]
        assert mine == [f"c{n}:{k}" for k in range(per_client)]
    relays = {pid for chatter in chatters for pid, _ in chatter.received}
    assert relays == {str(worker.pid) for worker in workers}, (
        f"relayed by {relays}, workers are {[w.pid for w in workers]}")
