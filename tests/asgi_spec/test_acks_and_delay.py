"""At-least-once delivery and scheduled messages beyond the conformance suite: options
and URLs, the receipt type, SQLite's schema upgrade, and how the Redis layer keeps an
at-least-once message inside Redis while a receiver blocks (bells, never BLPOP of a
message), across shards too.
"""

from __future__ import annotations

import asyncio
import pickle
import re
import sqlite3
import struct
import time
from typing import Any

import msgpack
import pytest

from asgi_spec import LayerConfigError, layer_from_url
from asgi_spec.acks import AtLeastOnceRules, Receipt, make_receipt, split_receipt
from asgi_spec.exceptions import ChannelFull
from asgi_spec.layers.memory import MemoryChannelLayer
from asgi_spec.layers.redis import RedisChannelLayer
from asgi_spec.layers.redis import config as redis_config
from asgi_spec.layers.redis.scripts import make_envelope, read_envelope
from asgi_spec.layers.sqlite import SQLiteChannelLayer
from asgi_spec.testing import BlockedReceive, FakeClock

# -- options and URLs -----------------------------------------------------------


def test_at_least_once_from_a_url_query_comma_list_or_repeated():
    """``?at_least_once=a.*,b`` and a repeated key both give a list of globs."""
    for url in ["memory://?at_least_once=tasks.*,jobs.nightly&ack_timeout=5",
                "memory://?at_least_once=tasks.*&at_least_once=jobs.nightly&ack_timeout=5"]:
        layer = layer_from_url(url)
        assert layer.ack_timeout == 5
        assert layer.is_at_least_once("tasks.email")
        assert layer.is_at_least_once("jobs.nightly")
        assert not layer.is_at_least_once("jobs.other")


def test_sqlite_url_takes_at_least_once(tmp_path):
    """The SQLite URL carries the option like any other."""
    layer = layer_from_url(f"sqlite:///{tmp_path}/l.db?at_least_once=tasks.*,1")
    try:
        assert layer.is_at_least_once("tasks.a") and layer.is_at_least_once("1")
    finally:
        layer.close()


def test_redis_url_comma_list_does_not_split_the_hosts():
    """A comma inside a query is a list separator, not a new sharded URL."""
    parsed = redis_config.parse_url(
        "redis://a:6379/0?at_least_once=tasks.*,jobs.*&ack_timeout=30,"
        "redis://b:6379/0?at_least_once=tasks.*,jobs.*")
    assert [h.host for h in parsed.hosts] == ["a", "b"]
    assert parsed.layer_options == {"at_least_once": ["tasks.*", "jobs.*"], "ack_timeout": 30}
    with pytest.raises(LayerConfigError, match="own URL"):
        redis_config.parse_url("redis://a:6379/0,b:6379/0")


def test_rules_accept_globs_regexes_and_refuse_the_rest():
    """Globs and compiled regexes select normal channels; other values are errors."""
    rules = AtLeastOnceRules(["tasks.*", re.compile(r"job\d+")])
    assert [rules.matches(n) for n in ["tasks.a", "job7", "jobx", "tasks.x?y", "tasks!"]] == [
        True, True, False, False, False]
    assert not AtLeastOnceRules(None) and not AtLeastOnceRules("")
    for bad in [5, [b"bytes"], [None], {"a": 1}, b"tasks.*"]:
        with pytest.raises(LayerConfigError, match="at_least_once"):
            AtLeastOnceRules(bad)


def test_receipt_is_a_str_with_deliveries():
    """A ``Receipt`` is a ``str`` token with ``deliveries``; it pickles and splits back."""
    receipt = make_receipt("tasks.a", "42.xyz", 3)
    assert receipt == "tasks.a@42.xyz" and receipt.token == "tasks.a@42.xyz"
    assert type(receipt.token) is str and receipt.deliveries == 3
    assert "deliveries=3" in repr(receipt)
    copy = pickle.loads(pickle.dumps(receipt))
    assert isinstance(copy, Receipt) and copy.deliveries == 3
    assert split_receipt(receipt) == ("tasks.a", "42.xyz")
    assert split_receipt("tasks.a@x@y") is None


def check_blocked_receiver_sees_a_redelivery(layer: Any) -> None:
    """A receiver blocked on ``t`` (at-least-once, ``ack_timeout`` 0.2 s) gets the message
    it took and left unacknowledged back well within 2 s, with no send."""
    layer.send("t", {"x": 1})
    layer.receive_with_receipt(["t"])
    started = time.monotonic()
    channel, _, receipt = layer.receive_with_receipt(["t"], block=True, timeout=5)
    assert channel == "t" and receipt.deliveries == 2
    assert time.monotonic() - started < 2


def test_memory_blocked_receiver_sees_a_redelivery_without_a_send():
    """A blocked receiver notices an in-flight message coming due (real clock)."""
    check_blocked_receiver_sees_a_redelivery(
        MemoryChannelLayer(at_least_once=["t"], ack_timeout=0.2))


# -- SQLite ---------------------------------------------------------------------


def test_sqlite_file_from_before_acks_is_upgraded(tmp_path):
    """A database made without the in-flight columns gets them, keeping its messages."""
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE messages (id INTEGER PRIMARY KEY AUTOINCREMENT, queue TEXT NOT NULL,
            channel TEXT NOT NULL, sent_at REAL NOT NULL, expires_at REAL NOT NULL,
            body BLOB NOT NULL);
        INSERT INTO messages (queue, channel, sent_at, expires_at, body)
            VALUES ('tasks', 'tasks', 0, 9e18, x'81a17801');
    """)
    db.close()
    layer = SQLiteChannelLayer(path, at_least_once=["tasks"])
    try:
        channel, message, receipt = layer.receive_with_receipt(["tasks"])
        assert (channel, message, receipt.deliveries) == ("tasks", {"x": 1}, 1)
        assert layer.ack(receipt)
    finally:
        layer.close()


def test_sqlite_blocked_receiver_sees_a_redelivery_without_a_send(tmp_path):
    """A blocked SQLite receiver wakes when an in-flight message comes due (real clock)."""
    layer = SQLiteChannelLayer(tmp_path / "l.db", at_least_once=["t"], ack_timeout=0.2)
    try:
        check_blocked_receiver_sees_a_redelivery(layer)
    finally:
        layer.close()


# -- Redis ----------------------------------------------------------------------


def _bells(layer: RedisChannelLayer, queue: str) -> int:
    return layer._shard_of(queue).client.llen(f"{layer.prefix}w:{queue}")


def _listed(layer: RedisChannelLayer, queue: str) -> int:
    return layer._shard_of(queue).client.llen(f"{layer.prefix}q:{queue}")


def test_redis_blocks_on_bells_for_at_least_once_queues(make):
    """A blocking receive waits on the bell list of an at-least-once queue and on the
    message list of any other."""
    layer = make(at_least_once=["tasks"])
    assert sorted(layer._blpop_keys(["tasks", "other", "srv!"])) == sorted(
        [f"{layer.prefix}w:tasks", f"{layer.prefix}q:other", f"{layer.prefix}q:srv!"])


def test_redis_bells_follow_the_queue_length(make):
    """Sends ring one bell per waiting message; pops (and empty pops) trim them."""
    clock = FakeClock()
    layer = make(at_least_once=["tasks"], ack_timeout=10, clock=clock)
    for n in range(3):
        layer.send("tasks", {"n": n})
    assert _bells(layer, "tasks") == 3
    layer.receive_with_receipt(["tasks"])
    layer.receive(["tasks"])
    assert (_listed(layer, "tasks"), _bells(layer, "tasks")) == (1, 1)
    clock.advance(10)  # the first comes back: two waiting, two bells
    assert layer.channel_statistics("tasks")["messages_pending"] == 2
    assert _bells(layer, "tasks") == 2


def test_redis_wake_up_never_takes_the_message(make):
    """A receiver that dies right after its blocking pop returned (a bell) has taken
    nothing: the message is still queued for everybody else."""
    layer = make(at_least_once=["tasks"])
    other = make(prefix=layer.prefix, at_least_once=["tasks"])
    layer.send("tasks", {"x": 1})
    shard = layer._shard_of("tasks")
    popped = layer._blpop(shard, ["tasks"], 1.0)  # ... and the process dies here
    assert popped == (shard, "tasks", None)
    assert _listed(layer, "tasks") == 1
    channel, message, receipt = other.receive_with_receipt(["tasks"], block=True, timeout=1)
    assert (channel, message, receipt.deliveries) == ("tasks", {"x": 1}, 1)


def test_redis_blocked_receipt_receive_puts_the_message_in_flight(make):
    """After a blocked ``receive_with_receipt`` wakes, its message is in the in-flight
    set with a deadline, and ``ack`` removes it there."""
    layer = make(at_least_once=["tasks"], ack_timeout=30)
    with BlockedReceive(lambda: layer.receive_with_receipt(["tasks"], block=True, timeout=5),
                        patience=5) as reader:
        layer.send("tasks", {"x": 1})
    [(_, _, receipt)] = reader.results
    client = layer._shard_of("tasks").client
    assert client.zcard(f"{layer.prefix}f:tasks") == 1
    assert layer.ack(receipt)
    assert client.zcard(f"{layer.prefix}f:tasks") == 0


def test_redis_lost_bells_of_a_race_are_rung_again(make, redis_shard_urls):
    """When the waits on two servers both pop a bell, the loser's bell is rung again,
    so the message it announced still wakes someone."""
    layer = make(hosts=redis_shard_urls, at_least_once=["sb.*"])
    names: dict[int, str] = {}
    for n in range(1000):
        names.setdefault(layer._ring.index_of(f"sb.t{n}"), f"sb.t{n}")
    first, second = names[0], names[1]
    layer.send(first, {"n": 1})
    layer.send(second, {"n": 2})
    replies = []
    for channel in (first, second):
        shard = layer._shard_of(channel)
        key = f"{layer.prefix}w:{channel}"
        replies.append((shard.index, [key.encode(), shard.client.lpop(key)]))
    lost: dict[Any, list[str]] = {}
    winner = layer._race_outcome(replies, lost_bells=lost)
    assert winner is not None and winner[2] is None
    assert {shard.index: queues for shard, queues in lost.items()} == {
        layer._ring.index_of(second): [second]}
    assert _bells(layer, second) == 0
    layer._call(layer._shard_of(second), "ring", layer._args(second), retry=True)
    assert _bells(layer, second) == 1


def test_redis_sharded_blocking_receive_with_receipts(make, redis_shard_urls):
    """A receive blocked on at-least-once queues of two servers wakes for either and
    returns a receipt that acknowledges on the right server."""
    layer = make(hosts=redis_shard_urls, at_least_once=["sb.*"])
    channels = sorted({layer._ring.index_of(f"sb.s{n}"): f"sb.s{n}"
                       for n in range(1000)}.values())
    for channel in channels:
        with BlockedReceive(lambda: layer.receive_with_receipt(channels, block=True, timeout=5),
                            patience=5) as reader:
            layer.send(channel, {"to": channel})
        [(got, message, receipt)] = reader.results
        assert (got, message) == (channel, {"to": channel})
        assert layer.ack(receipt)


def test_redis_plain_layer_reads_a_redelivered_message(make):
    """A layer without the option still receives a message that came back from flight
    (its list item carries two more fields)."""
    clock = FakeClock()
    acking = make(at_least_once=["tasks"], ack_timeout=10, clock=clock)
    plain = make(prefix=acking.prefix, clock=clock)
    acking.send("tasks", {"x": 1})
    acking.receive_with_receipt(["tasks"])
    clock.advance(10)
    assert plain.receive(["tasks"], block=True, timeout=1) == ("tasks", {"x": 1})


def test_redis_idle_plain_worker_brings_back_a_due_item_within_a_sweep(make):
    """A process that treats a queue as plain, idling in blocking receives of
    0.2 s (one BLMPOP each, the receive script at most once a second), still
    brings back another process's timed-out in-flight message: within about one
    SWEEP_INTERVAL of its deadline."""
    clock = FakeClock()
    acking = make(at_least_once=["tasks"], ack_timeout=10, clock=clock)
    plain = make(prefix=acking.prefix, clock=clock)
    acking.send("tasks", {"n": 7})
    acking.receive_with_receipt(["tasks"])
    assert plain.receive(["tasks"], block=True, timeout=0.2) == (None, None)  # swept
    clock.advance(10)  # now due: the next sweep moves it back to the list
    started = time.monotonic()
    got = (None, None)
    while got == (None, None) and time.monotonic() - started < 5:
        got = plain.receive(["tasks"], block=True, timeout=0.2)
    assert got == ("tasks", {"n": 7})
    assert time.monotonic() - started < 1.5


def test_redis_receive_among_empty_queues_still_requeues_a_due_item(make):
    """A receive whose queues are all empty, one with an item in flight, still moves
    that item back once its deadline passed (the shortcut for empty queues with
    nothing in flight does not apply), for a plain receive, a batch receive and a
    receive with receipt."""
    clock = FakeClock()
    acking = make(at_least_once=["tasks"], ack_timeout=10, clock=clock)
    plain = make(prefix=acking.prefix, clock=clock)
    queues = ["idle.a", "tasks", "idle.b", "srv!"]
    for n in range(3):
        acking.send("tasks", {"n": n})
    held = [acking.receive_with_receipt(["tasks"])[1]["n"] for _ in range(3)]
    assert held == [0, 1, 2] and _listed(acking, "tasks") == 0
    assert plain.receive(queues) == (None, None)  # not due yet
    clock.advance(10)
    assert plain.receive(queues) == ("tasks", {"n": 0})
    assert [m["n"] for _, m in plain.receive_batch(queues, 10)] == [1, 2]
    acking.send("tasks", {"n": 3})
    got = acking.receive_with_receipt(["idle.a", "tasks"])
    clock.advance(10)
    again = acking.receive_with_receipt(["idle.a", "tasks", "idle.b"])
    assert (again[1], again[2].deliveries) == (got[1], 2)


def test_redis_send_counts_and_requeues_in_flight_items(make):
    """A send to a queue whose only items are in flight counts them against its
    capacity, and once they are due puts its message after them (redeliveries first)."""
    clock = FakeClock()
    layer = make(at_least_once=["tasks"], ack_timeout=10, capacity=2, clock=clock)
    layer.send("tasks", {"n": 0})
    layer.send("tasks", {"n": 1})
    layer.receive_with_receipt(["tasks"])
    layer.receive_with_receipt(["tasks"])
    assert _listed(layer, "tasks") == 0
    with pytest.raises(ChannelFull):
        layer.send("tasks", {"n": 2})
    clock.advance(10)
    with pytest.raises(ChannelFull):  # both came back: still two held
        layer.send("tasks", {"n": 2})
    assert _listed(layer, "tasks") == 2
    assert [layer.receive(["tasks"])[1]["n"] for _ in range(2)] == [0, 1]
    layer.send("tasks", {"n": 2})
    assert layer.receive(["tasks"])[1] == {"n": 2}


def test_redis_group_send_rings_at_least_once_members(make):
    """A group send (the per-server push path) rings the bell of a member that the
    sender's option names, so a blocked receiver wakes."""
    layer = make(at_least_once=["tasks.*"], channel_capacity={"x.*": 5})
    layer.group_add("g", "tasks.a")
    layer.group_add("g", "other")
    assert layer.send_group("g", {"x": 1}) == 2
    assert _bells(layer, "tasks.a") == 1 and _bells(layer, "other") == 0


def test_redis_scheduled_messages_live_on_their_queue_server(make, redis_shard_urls):
    """A scheduled message is stored on the server of its queue, and moved there."""
    clock = FakeClock()
    layer = make(hosts=redis_shard_urls, clock=clock)
    channels = sorted({layer._ring.index_of(f"sb.d{n}"): f"sb.d{n}"
                       for n in range(1000)}.values())
    for channel in channels:
        layer.send_later(channel, {"to": channel}, 1)
    for channel in channels:
        [record] = layer._shard_of(channel).client.hvals(f"{layer.prefix}sched:m")
        assert channel.encode() in record
    clock.advance(1)
    assert layer.deliver_due() == 2
    for channel in channels:
        assert layer.receive([channel]) == (channel, {"to": channel})


def test_redis_in_flight_item_layout():
    """An in-flight item is the envelope as an array of 5; ``read_envelope`` reads both."""
    envelope = make_envelope(5.0, "tasks", b"body")
    item = b"\x95" + envelope[1:] + b"\xcb" + struct.pack(">d", 7) + b"\xcb" + struct.pack(">d", 2)
    assert read_envelope(item) == (5.0, "tasks", b"body")
    assert msgpack.unpackb(item)[3:] == [7.0, 2.0]


def test_redis_async_sharded_receive_with_receipts(make, redis_shard_urls):
    """``receive_with_receipt_async`` blocked on at-least-once queues of two servers
    wakes for a send to either one."""
    layer = make(hosts=redis_shard_urls, at_least_once=["sb.*"])
    channels = sorted({layer._ring.index_of(f"sb.a{n}"): f"sb.a{n}"
                       for n in range(1000)}.values())

    async def scenario(channel: str) -> Any:
        waiting = asyncio.ensure_future(layer.receive_with_receipt_async(channels, timeout=5))
        await asyncio.sleep(0.05)
        await layer.send_async(channel, {"to": channel})
        got, message, receipt = await waiting
        assert await layer.ack_async(receipt)
        return got, message

    for channel in channels:
        assert asyncio.run(scenario(channel)) == (channel, {"to": channel})


def test_redis_undecryptable_in_flight_message_is_dropped(make, caplog):
    """An at-least-once message no key can decrypt is dropped (not left in flight to
    come back forever)."""
    writer = make(at_least_once=["tasks"], symmetric_encryption_keys=["other"])
    reader = make(prefix=writer.prefix, at_least_once=["tasks"],
                  symmetric_encryption_keys=["mine"])
    writer.send("tasks", {"x": 1})
    assert reader.receive_with_receipt(["tasks"]) == (None, None, None)
    client = reader._shard_of("tasks").client
    assert client.zcard(f"{reader.prefix}f:tasks") == 0
    assert "could not be decrypted" in caplog.text


def test_redis_sender_without_the_option_still_wakes_a_receiver(make):
    """A sender whose layer does not name the queue still rings its bell: the blocked
    receiver registered the queue as at-least-once in Redis."""
    receiver = make(at_least_once=["tasks"])
    sender = make(prefix=receiver.prefix)
    with BlockedReceive(lambda: receiver.receive_with_receipt(["tasks"], block=True, timeout=5),
                        settle=0.1, patience=5) as reader:
        sender.send("tasks", {"x": 1})
    assert reader.waited < 0.5
    [(channel, message, receipt)] = reader.results
    assert (channel, message, receipt.deliveries) == ("tasks", {"x": 1}, 1)


def test_redis_one_round_trip_group_send_rings_registered_queues(make):
    """The single-script group send rings the bells of at-least-once members."""
    layer = make(at_least_once=["tasks.*"])
    layer.receive_with_receipt(["tasks.a"])  # registers the queue, as any receiver does
    plain = make(prefix=layer.prefix)
    plain.group_add("g", "tasks.a")
    assert plain.send_group("g", {"x": 1}) == 1
    assert _bells(layer, "tasks.a") == 1
