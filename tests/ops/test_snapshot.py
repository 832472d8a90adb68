"""``asgi_spec.ops.snapshot`` against the real backends (memory, SQLite, a private Redis),
and the text and JSON reports made from it."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest

from asgi_spec.exceptions import InvalidChannelName
from asgi_spec.layers.memory import MemoryChannelLayer
from asgi_spec.layers.redis import RedisChannelLayer
from asgi_spec.layers.sqlite import SQLiteChannelLayer
from asgi_spec.ops import WorkerStatus, diagnose, render_json, render_text, snapshot
from asgi_spec.testing import FakeClock

_prefixes = itertools.count()

WORKER_INFO = {
    "channels": ["http.request", "websocket.*", "chat"], "host": "box", "pid": 41,
    "threads": 2, "busy": 1, "current": "chat", "current_since": 0.0, "processed": 17,
    "failed": 2, "started_at": 0.0, "heartbeat_at": 0.0, "heartbeat_interval": 5.0,
    "by_channel": {"chat": [10, 0.5, 2], "http.request": [7, 0.07, 0]},
}


@pytest.fixture(params=["memory", "sqlite", "redis"])
def layer(request: pytest.FixtureRequest, tmp_path: Any) -> Any:
    clock = FakeClock()
    options: dict[str, Any] = {"clock": clock, "capacity": 10, "group_expiry": 100}
    if request.param == "memory":
        made: Any = MemoryChannelLayer(**options)
    elif request.param == "sqlite":
        made = SQLiteChannelLayer(tmp_path / "layer.db", **options)
    else:
        url = request.getfixturevalue("redis_url")
        made = RedisChannelLayer(hosts=[url], prefix=f"sbtest:ops{next(_prefixes)}:", **options)
    made.flush()
    yield made
    made.flush()
    made.close()


def register(layer: Any) -> None:
    now = layer.clock()
    info = {**WORKER_INFO, "current_since": now - 3, "started_at": now - 600,
            "heartbeat_at": now - 1}
    layer.register_process("worker", "w1", info, ttl=30)
    layer.register_process("interfaceserver", "srv", {
        "reply_prefix": "srv!", "host": "box", "pid": 7, "http_connections": 3,
        "websockets": 2, "http_requests_in_flight": 1, "connections": 5,
        "listening": ["tcp:127.0.0.1:8000"], "started_at": now - 60, "heartbeat_at": now,
        "heartbeat_interval": 5.0, "stats": {"messages_sent": 9}}, ttl=30)


def test_snapshot_reads_channels_groups_workers_and_servers(layer):
    """Per channel pending, oldest age, capacity, sent, ChannelFull and expired counts and
    consumers; groups with sizes; workers and servers as their heartbeats describe them."""
    clock = layer.clock
    register(layer)
    layer.send("http.request", {"n": 1})
    clock.advance(4)
    for n in range(9):
        layer.send("http.request", {"n": n})
    with pytest.raises(layer.ChannelFull):
        layer.send("http.request", {"n": 10})
    layer.send("chat", {"n": 1})
    clock.advance(61)  # the chat message expires unread
    layer.send("srv!a", {"reply": 1})
    layer.group_add("room", "srv!a")
    layer.group_add("room", "srv!b")
    layer.group_add("lobby", "srv!a")
    register(layer)
    look = snapshot(layer)
    assert [c.name for c in look.channels] == [
        "chat", "http.request", "websocket.connect", "websocket.disconnect",
        "websocket.receive", "srv!"]  # the worker consumes websocket.*
    chat, http, replies = look.channels[0], look.channels[1], look.channels[-1]
    assert (http.pending, http.capacity, http.sent, http.full) == (0, 10, 10, 1)
    assert http.expired == 10 and http.consumers == ("w1",)
    assert (chat.pending, chat.expired, chat.consumers) == (0, 1, ("w1",))
    assert (replies.pending, replies.consumers, replies.capacity) == (1, ("srv",), 100_000)
    assert [(g.name, g.size, g.members) for g in look.groups] == [("lobby", 1, None),
                                                                  ("room", 2, None)]
    (worker,) = look.workers
    assert (worker.name, worker.host, worker.pid, worker.threads, worker.busy) == \
        ("w1", "box", 41, 2, 1)
    assert worker.channels == ("http.request", "websocket.*", "chat")
    assert worker.current_age(look.taken_at) == pytest.approx(3)
    assert worker.heartbeat_age(look.taken_at) == pytest.approx(1)
    assert worker.uptime(look.taken_at) == pytest.approx(600)
    assert worker.by_channel["chat"] == (10, 0.5, 2)
    (server,) = look.servers
    assert (server.http_connections, server.websockets, server.requests_in_flight) == (3, 2, 1)
    assert server.listening == ("tcp:127.0.0.1:8000",) and server.stats == {"messages_sent": 9}
    assert look.totals["messages_count"] == 12
    assert look.taken_at == clock()


def test_pending_and_oldest_age(layer):
    """A waiting message shows up with its age, and the fill is pending / capacity."""
    register(layer)
    layer.send("chat", {"n": 1})
    layer.clock.advance(2.5)
    layer.send("chat", {"n": 2})
    chat = snapshot(layer).channel("chat")
    assert chat.pending == 2 and chat.fill == pytest.approx(0.2)
    assert chat.oldest_age == pytest.approx(2.5, abs=0.01)


def test_members_on_request_and_asked_channels(layer):
    """``members=True`` lists each group's channels; ``channels`` adds queues to look at."""
    layer.group_add("room", "sb.a")
    layer.group_add("room", "srv!x")
    layer.send("jobs", {"n": 1})
    look = snapshot(layer, channels=["jobs", "other!"], members=True)
    assert [(g.name, sorted(g.members)) for g in look.groups] == [("room", ["sb.a", "srv!x"])]
    assert [c.name for c in look.channels] == ["jobs", "other!"]
    assert look.channel("jobs").pending == 1 and look.channel("jobs").consumers == ()
    assert look.workers == () and look.servers == ()


def test_server_channels_are_shown_when_they_matter(layer):
    """With a server live, http.request is always shown; websocket.* only when consumed or
    used; globs in worker channel lists are never asked about."""
    layer.register_process("interfaceserver", "srv", {"reply_prefix": "srv!"}, ttl=30)
    layer.register_process("worker", "w1", {"channels": ["http.*"]}, ttl=30)
    assert [c.name for c in snapshot(layer).channels] == ["http.disconnect", "http.request",
                                                         "srv!"]
    layer.send("websocket.receive", {"x": 1})
    assert "websocket.receive" in [c.name for c in snapshot(layer).channels]


def test_expired_memberships_leave_the_group_list(layer):
    """A group whose memberships expired is not in the snapshot."""
    layer.group_add("room", "sb.a")
    layer.clock.advance(101)
    assert snapshot(layer).groups == ()


def test_invalid_asked_channel_is_refused(layer):
    """Asking about an invalid channel name raises InvalidChannelName before any read."""
    with pytest.raises(InvalidChannelName):
        snapshot(layer, channels=["no spaces"])


def test_reports_say_what_the_snapshot_holds(layer):
    """The text report shows the tables and problems; the JSON report is the same data."""
    register(layer)
    for n in range(10):
        layer.send("http.request", {"n": n})
    look = snapshot(layer, members=True)
    problems = diagnose(look, look.taken_at)
    text = render_text(look, problems, look.taken_at)
    assert "http.request" in text and "██████████ 100%" in text
    assert "channel http.request 100% full (10/10): senders get ChannelFull" in text
    assert "WORKERS (1 live: 1 busy, 0 idle)" in text
    assert "chat (3.0 s)" in text
    assert "INTERFACE SERVERS (1 live)" in text
    assert text.rstrip().endswith("UNHEALTHY (1 error, 0 warnings)")
    data = json.loads(render_json(look, problems, look.taken_at))
    assert data["healthy"] is False
    assert data["problems"][0]["code"] == "channel-full"
    http = next(c for c in data["channels"] if c["name"] == "http.request")
    assert (http["pending"], http["fill"], http["consumers"]) == (10, 1.0, ["w1"])
    assert http["consumer_seconds_avg"] == pytest.approx(0.01)
    assert data["workers"][0]["current_age"] == pytest.approx(3)
    assert data["servers"][0]["http_connections"] == 3


class NoExtras(MemoryChannelLayer):
    """A layer written before the registry and the groups listing."""

    extensions = ["groups", "flush", "statistics"]

    def groups(self) -> list[str]:
        raise NotImplementedError


def test_a_layer_without_registry_or_group_listing_still_gives_a_snapshot():
    """Channels asked for are read; workers, servers and groups are unknown, with notes."""
    layer = NoExtras()
    layer.send("jobs", {"n": 1})
    look = snapshot(layer, channels=["jobs"])
    assert look.channel("jobs").pending == 1
    assert look.groups is None and look.has_registry is False
    assert len(look.notes) == 2
    assert "cannot list" in render_text(look, [], 0.0)


@pytest.mark.parametrize("info", [None, "x", {"channels": "http.request"},
                                  {"channels": [1, "ok"], "busy": "no", "pid": "7",
                                   "by_channel": {"a": [1]}}])
def test_malformed_worker_info_reads_as_unknown(info):
    """Registry info from a broken or foreign process never breaks the snapshot."""
    status = WorkerStatus.from_info("w", info)
    assert status.busy is None and status.pid is None and status.by_channel == {}
    assert status.state == "unknown"
