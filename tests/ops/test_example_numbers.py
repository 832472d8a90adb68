"""The example chat (``deploy/example``) under a known load: ``switchboard status --watch``,
``/metrics`` and the dashboard feed show the same numbers, and they are what the client did.

Real processes on a temporary SQLite layer and database: ``manage.py migrate``, one
``manage.py runworker`` (Django views and the chat consumers) and an ``interfaceserver``
with ``--metrics --health --dashboard``; ``switchboard status --watch --json`` runs beside
them. The test's client makes HTTP requests (Django's health view: 200, an unknown path:
404) and opens WebSockets into one room, where every chat message it sends is stored and
published to every socket in the room.
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

from tests.ops.processes import REPO, Processes, clean_env, get, metric, wait_until

MANAGE = REPO / "deploy" / "example" / "manage.py"
OK_REQUESTS, MISSING_REQUESTS = 120, 20
SOCKETS, MESSAGES_EACH = 4, 10
ROOM = "lobby"


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    started = Processes(tmp_path)
    yield started
    started.stop_all()


class Socket:
    """One WebSocket into the room; a thread counts every frame it receives."""

    def __init__(self, url: str) -> None:
        self._stack = contextlib.ExitStack()
        self.connection: ClientConnection = self._stack.enter_context(
            connect(url, open_timeout=10, close_timeout=2))
        self.frames: list[dict[str, Any]] = []
        self.stopping = threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while not self.stopping.is_set():
            try:
                raw = self.connection.recv(timeout=0.1)
            except TimeoutError:
                continue
            except Exception:
                return  # closed
            self.frames.append(json.loads(raw))

    def members(self) -> list[str]:
        lists = [f["payload"] for f in self.frames if f["stream"] == "presence"]
        return max(lists, key=lambda p: p["at"])["members"] if lists else []

    def chat_messages(self) -> int:
        return sum(1 for f in self.frames
                   if f["stream"] == "chat" and f["payload"].get("type") == "message")

    def say(self, text: str) -> None:
        self.connection.send(json.dumps({"stream": "chat", "payload": {"text": text}}))

    def close(self) -> None:
        self.stopping.set()
        self.reader.join(2)
        self._stack.close()


def _numbers_from_status(status: dict[str, Any]) -> dict[str, Any]:
    """The numbers under test, as a status document (or the feed's status) has them."""
    sent = {c["name"]: c["sent"] for c in status["channels"]}
    (worker,) = status["workers"] or [{}]
    (server,) = status["servers"] or [{}]
    handled = (worker.get("by_channel") or {}).get("http.request", {}).get("handled")
    return {
        "http.request sent": sent.get("http.request"),
        "websocket.connect sent": sent.get("websocket.connect"),
        "websocket.receive sent": sent.get("websocket.receive"),
        "worker processed": worker.get("processed"),
        "worker http.request handled": handled,
        "worker stale": worker.get("stale"),
        "server websockets": server.get("websockets"),
        "group members": sum(g["size"] for g in status["groups"] or ()),
    }


def _numbers_from_metrics(body: bytes, server_id: str) -> dict[str, Any]:
    def value(name: str, **labels: str) -> int | None:
        found = metric(body, name, **labels)
        return None if found is None else int(found)

    return {
        "http.request sent": value("switchboard_channel_messages_total", channel="http.request"),
        "websocket.connect sent": value("switchboard_channel_messages_total",
                                        channel="websocket.connect"),
        "websocket.receive sent": value("switchboard_channel_messages_total",
                                        channel="websocket.receive"),
        "worker processed": value("switchboard_worker_messages_total", worker="w1"),
        "worker http.request handled": value("switchboard_consumer_messages_total",
                                             worker="w1", channel="http.request"),
        "worker stale": value("switchboard_worker_up", worker="w1") == 0,
        "server websockets": value("switchboard_interfaceserver_connections",
                                   server=server_id, kind="websocket"),
        "group members": value("switchboard_group_members"),
    }


@pytest.mark.slow
def test_status_metrics_and_dashboard_agree_on_the_example_under_load(tmp_path, processes):
    """After 120 requests answered 200 and 20 answered 404 by Django (8 clients at once),
    4 WebSockets in one room and 40 chat messages (each published to all 4 sockets):
    status --watch, /metrics and the dashboard feed report the same layer counts
    (http.request 140, websocket.connect 4, websocket.receive 40), the same worker counts
    (184 processed, 140 of them HTTP), 4 open WebSockets and 4 group members -- exactly
    what the client did; /metrics and the feed count the requests by status (120 x 200,
    20 x 404, 4 handshakes) and every frame the client received (174). Every status
    document written during the load had counters that only grew, never past the truth."""
    began = time.monotonic()
    env = clean_env(CHANNEL_LAYER_URL=f"sqlite:///{tmp_path}/layer.db",
                    DATABASE_URL=f"sqlite:///{tmp_path}/chat.db")
    for name in ("DJANGO_SETTINGS_MODULE", "WEB_CONCURRENCY"):
        env.pop(name, None)
    url = env["CHANNEL_LAYER_URL"]
    migrated = processes.start("migrate", [sys.executable, str(MANAGE), "migrate",
                                           "--noinput", "-v0"], env=env)
    assert migrated.wait(60) == 0, processes.logs()
    processes.start("worker", [sys.executable, str(MANAGE), "runworker", "--threads", "2",
                               "--name", "w1"], env=env)
    _, port = processes.server(url, "--metrics", "--health", "--dashboard",
                               "--ops-interval", "0.5")
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: get(base + "/-/ready")[0] == 200, "the worker to be ready", 30)
    server_id = json.loads(get(base + "/-/health")[1])["server_id"]
    watch = processes.status_watch(url, interval=0.3)

    paths = ["/healthz"] * OK_REQUESTS + ["/missing/"] * MISSING_REQUESTS
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda path: get(base + path, timeout=20)[0], paths))
    assert sorted(codes) == [200] * OK_REQUESTS + [404] * MISSING_REQUESTS

    sockets: list[Socket] = []
    try:
        for n in range(SOCKETS):
            sockets.append(Socket(f"ws://127.0.0.1:{port}/ws/rooms/{ROOM}/?name=u{n}"))
            wait_until(lambda: all(len(s.members()) == len(sockets) for s in sockets),
                       "every socket to see the newcomer", 15)
        for n in range(MESSAGES_EACH):
            for index, socket in enumerate(sockets):
                socket.say(f"message {n} from u{index}")
        sent = SOCKETS * MESSAGES_EACH
        wait_until(lambda: all(s.chat_messages() == sent for s in sockets),
                   "every socket to receive every message", 15)

        http = OK_REQUESTS + MISSING_REQUESTS
        expected = {
            "http.request sent": http, "websocket.connect sent": SOCKETS,
            "websocket.receive sent": sent, "worker processed": http + SOCKETS + sent,
            "worker http.request handled": http, "worker stale": False,
            "server websockets": SOCKETS, "group members": SOCKETS,
        }
        seen: dict[str, Any] = {}

        def agreed() -> bool:
            latest = watch.latest()
            feed = json.loads(get(base + "/-/dashboard.json")[1])
            body = get(base + "/metrics")[1]
            seen.update({
                "status --watch": latest and _numbers_from_status(latest),
                "/metrics": _numbers_from_metrics(body, server_id),
                "dashboard feed": feed["status"] and _numbers_from_status(feed["status"]),
                "client frames": sum(len(s.frames) for s in sockets),
                "metrics frames out": metric(body, "switchboard_websocket_messages_total",
                                             direction="out"),
                "body": body, "feed": feed,
            })
            return all(seen[key] == expected for key in
                       ("status --watch", "/metrics", "dashboard feed")) \
                and seen["client frames"] == seen["metrics frames out"]

        try:
            wait_until(agreed, "status, /metrics and the dashboard to agree", 15, 0.2)
        except AssertionError:
            raise AssertionError(f"expected {expected}, saw " + json.dumps(
                {k: v for k, v in seen.items() if k not in ("body", "feed")},
                default=str)) from None
        body, feed = seen["body"], seen["feed"]
        assert metric(body, "switchboard_http_requests_total", status="200") == OK_REQUESTS
        assert metric(body, "switchboard_http_requests_total", status="404") \
            == MISSING_REQUESTS
        assert metric(body, "switchboard_websocket_handshakes_total", status="101") == SOCKETS
        assert metric(body, "switchboard_websocket_messages_total", direction="in") == sent
        assert metric(body, "switchboard_websocket_connections") == SOCKETS
        assert feed["server"]["requests_total"] == http
        assert feed["server"]["websockets"] == SOCKETS
        assert feed["status"]["healthy"] is True and watch.latest()["healthy"] is True
        # Each socket got the room's history, a presence list per join it saw, and every
        # chat message; the server wrote exactly those frames.
        presence_lists = SOCKETS * (SOCKETS + 1) // 2
        assert seen["client frames"] == SOCKETS + presence_lists + SOCKETS * sent
        for key in ("http.request sent", "worker processed", "websocket.receive sent"):
            series = [_numbers_from_status(doc)[key] or 0 for doc in watch.documents()]
            assert series == sorted(series) and series[-1] == expected[key], (key, series)
    finally:
        for socket in sockets:
            socket.close()
    assert time.monotonic() - began < 30
