"""The channel-layer conformance suite: every guarantee of the contract, as a test.

Every backend runs this whole suite, and third-party backends can too::

    from asgi_spec.conformance import ChannelLayerConformance

    class TestMyLayer(ChannelLayerConformance):
        def create_layer(self, **options):
            return MyLayer(**options)

``create_layer`` receives the options under test plus ``clock=``, a
``FakeClock``: a conforming layer takes every expiry decision from that clock,
so the suite moves time with ``clock.advance()`` instead of sleeping. Only the
blocking-receive tests wait on real time, for fractions of a second.

Backends whose instances share storage (so several processes can use them)
subclass ``SharedLayerConformance`` instead, which adds the cross-instance
claims. Each test's docstring is the claim it checks.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from typing import Any

import pytest

from asgi_spec.acks import Receipt
from asgi_spec.base import STATISTICS_KEYS, BaseChannelLayer
from asgi_spec.exceptions import (
    ChannelFull,
    InvalidChannelName,
    InvalidMessage,
    LayerConfigError,
    MessageTooLarge,
)
from asgi_spec.testing import BlockedReceive, FakeClock

#: How long the blocking tests let a receiver wait, in real seconds.
SHORT_WAIT = 0.3

#: The layer options of the at-least-once tests: ``sb.task.*`` and ``sb.job``
#: are at-least-once, with a 30 s visibility timeout.
ACK_OPTIONS: dict[str, Any] = {
    "at_least_once": ["sb.task.*", re.compile(r"sb\.job")],
    "ack_timeout": 30,
}


class ChannelLayerConformance:
    """Subclass as ``Test<Backend>`` and implement ``create_layer``."""

    def create_layer(self, **options: Any) -> BaseChannelLayer:
        raise NotImplementedError("conformance subclasses implement create_layer(**options)")

    # -- fixtures ----------------------------------------------------------

    @pytest.fixture
    def clock(self) -> FakeClock:
        return FakeClock()

    @pytest.fixture
    def make_layer(self, clock: FakeClock):
        made: list[BaseChannelLayer] = []

        def make(**options: Any) -> BaseChannelLayer:
            options.setdefault("clock", clock)
            layer = self.create_layer(**options)
            if not made:
                layer.flush()
            made.append(layer)
            return layer

        yield make
        for layer in made:
            layer.flush()
            layer.close()

    @pytest.fixture
    def layer(self, make_layer) -> BaseChannelLayer:
        return make_layer()

    # -- the basic API -----------------------------------------------------

    def test_extensions_are_declared(self, layer):
        """The layer lists the groups, flush, statistics, async, registry, acks and delay
        extensions."""
        assert {"groups", "flush", "statistics", "async", "registry", "acks",
                "delay"} <= set(layer.extensions)

    def test_exceptions_are_layer_attributes(self, layer):
        """``layer.ChannelFull`` and ``layer.MessageTooLarge`` are the contract's classes."""
        assert layer.ChannelFull is ChannelFull
        assert layer.MessageTooLarge is MessageTooLarge

    def test_send_then_receive(self, layer):
        """A sent message is received from its channel, equal to what was sent."""
        layer.send("sb.test", {"value": "hello"})
        assert layer.receive(["sb.test"]) == ("sb.test", {"value": "hello"})

    def test_receive_nothing_returns_none_pair(self, layer):
        """A non-blocking receive on empty channels returns ``(None, None)`` at once."""
        started = time.monotonic()
        assert layer.receive(["sb.empty", "sb.other"]) == (None, None)
        assert time.monotonic() - started < SHORT_WAIT

    def test_receive_many_alias(self, layer):
        """``receive_many`` (the 1.x name) behaves as ``receive``."""
        layer.send("sb.test", {"n": 1})
        assert layer.receive_many(["sb.test"]) == ("sb.test", {"n": 1})

    def test_fifo_per_channel(self, layer):
        """Messages on one channel are received in the order they were sent."""
        for n in range(20):
            layer.send("sb.fifo", {"n": n})
        got = [layer.receive(["sb.fifo"])[1]["n"] for _ in range(20)]
        assert got == list(range(20))

    def test_fifo_per_single_reader_channel(self, layer):
        """A ``name?id`` channel is strictly ordered."""
        channel = layer.new_channel("sb.reply?")
        for n in range(10):
            layer.send(channel, {"n": n})
        assert [layer.receive([channel])[1]["n"] for _ in range(10)] == list(range(10))

    def test_at_most_once_single_consumer(self, layer):
        """A message is received once; a second receive finds nothing."""
        layer.send("sb.once", {"x": 1})
        assert layer.receive(["sb.once"])[0] == "sb.once"
        assert layer.receive(["sb.once"]) == (None, None)

    def test_receive_from_several_channels(self, layer):
        """A receive over several channels returns a message from whichever has one."""
        layer.send("sb.b", {"which": "b"})
        assert layer.receive(["sb.a", "sb.b", "sb.c"]) == ("sb.b", {"which": "b"})

    def test_busy_channels_do_not_starve_each_other(self, layer):
        """With two busy channels, a reader of both gets messages from both."""
        for n in range(10):
            layer.send("sb.one", {"n": n})
            layer.send("sb.two", {"n": n})
        seen = [layer.receive(["sb.one", "sb.two"])[0] for _ in range(10)]
        assert {"sb.one", "sb.two"} <= set(seen)

    def test_receive_rejects_a_bare_string(self, layer):
        """``receive("name")`` is a mistake for ``receive(["name"])`` and says so."""
        with pytest.raises(InvalidChannelName, match="list"):
            layer.receive("sb.test")

    def test_receive_needs_a_channel(self, layer):
        """``receive([])`` raises instead of waiting on nothing."""
        with pytest.raises(InvalidChannelName, match="at least one"):
            layer.receive([])

    # -- names -------------------------------------------------------------

    @pytest.mark.parametrize(
        "name", ["", "has space", "ü-nicode", "a?b?c", "a!b?c", "tail?", "x" * 256, None, 42]
    )
    def test_invalid_channel_names_are_refused(self, layer, name):
        """Sending to a name that breaks the grammar raises ``InvalidChannelName``."""
        with pytest.raises(InvalidChannelName):
            layer.send(name, {"x": 1})

    def test_long_names_work(self, layer):
        """Names of 100 and of 255 characters are valid for every kind of channel."""
        for name in ["n" * 100, "n" * 255, "n" * 100 + "?" + "i" * 50, "p" * 60 + "!" + "l" * 60]:
            layer.send(name, {"x": 1})
            receive_as = name[: name.index("!") + 1] if "!" in name else name
            assert layer.receive([receive_as]) == (name, {"x": 1})

    def test_send_to_process_prefix_is_refused(self, layer):
        """A ``prefix!`` is only for receiving; sending to it names the mistake."""
        with pytest.raises(InvalidChannelName, match="prefix"):
            layer.send("srv!", {"x": 1})

    def test_receive_from_process_local_name_is_refused(self, layer):
        """Receiving from ``prefix!local`` is refused in favour of ``prefix!``."""
        with pytest.raises(InvalidChannelName, match="srv!"):
            layer.receive(["srv!abc"])

    def test_new_channel_is_unique_and_single_reader(self, layer):
        """``new_channel("x?")`` returns distinct ``x?<id>`` names that work."""
        made = {layer.new_channel("sb.reply?") for _ in range(500)}
        assert len(made) == 500
        assert all(re.fullmatch(r"sb\.reply\?[A-Za-z]{8,}", name) for name in made)
        name = made.pop()
        layer.send(name, {"ok": True})
        assert layer.receive([name]) == (name, {"ok": True})

    @pytest.mark.parametrize("pattern", ["sb.reply", "sb.reply!", "", "bad name?"])
    def test_new_channel_refuses_other_patterns(self, layer, pattern):
        """``new_channel`` needs a valid pattern ending in ``?``."""
        with pytest.raises(InvalidChannelName):
            layer.new_channel(pattern)

    @pytest.mark.parametrize("name", ["", "with?query", "with!bang", "sp ace"])
    def test_invalid_group_names_are_refused(self, layer, name):
        """Group names use channel characters without ``?`` or ``!``."""
        with pytest.raises(InvalidChannelName):
            layer.group_add(name, "sb.member")

    # -- process-specific channels -----------------------------------------

    def test_process_prefix_receives_every_local_channel(self, layer):
        """``receive(["srv!"])`` returns messages for every ``srv!local``, with full names."""
        layer.send("srv!aaa", {"n": 1})
        layer.send("srv!bbb", {"n": 2})
        layer.send("other!ccc", {"n": 3})
        got = [layer.receive(["srv!"]) for _ in range(3)]
        assert got == [("srv!aaa", {"n": 1}), ("srv!bbb", {"n": 2}), (None, None)]

    def test_process_channels_keep_send_order(self, layer):
        """Messages for the local channels of one prefix arrive in send order."""
        for n in range(12):
            layer.send(f"srv!c{n % 3}", {"n": n})
        assert [layer.receive(["srv!"])[1]["n"] for _ in range(12)] == list(range(12))

    def test_process_prefix_shares_capacity(self, make_layer):
        """Capacity of ``srv!a`` and ``srv!b`` is shared on ``srv!`` (``process_capacity``)."""
        layer = make_layer(process_capacity=3)
        for local in "abc":
            layer.send(f"srv!{local}", {"x": 1})
        with pytest.raises(ChannelFull):
            layer.send("srv!d", {"x": 1})

    def test_process_queues_have_room_for_many_connections(self, make_layer):
        """A ``srv!`` queue holds ``process_capacity`` messages (100,000 by default), far
        beyond one channel's ``capacity``; a ``channel_capacity`` rule still wins."""
        layer = make_layer(capacity=2)
        assert layer.get_capacity("srv!conn") == 100_000
        for n in range(50):
            layer.send(f"srv!c{n}", {"n": n})
        assert make_layer(channel_capacity={"srv!": 5}).get_capacity("srv!x") == 5

    def test_group_send_to_many_connections_of_one_process(self, make_layer):
        """A broadcast to 300 sockets of one server reaches all of them with the
        default capacities: none is dropped for want of room in ``srv!``."""
        layer = make_layer()
        for n in range(300):
            layer.group_add("crowd", f"srv!c{n}")
        assert layer.send_group("crowd", {"x": 1}) == 300
        assert len(layer.receive_batch(["srv!"], 1000)) == 300

    # -- batches -----------------------------------------------------------

    def test_send_many_reports_each_outcome_in_order(self, make_layer):
        """``send_many`` queues every good item and returns, per item, ``None`` or the
        error ``send`` would have raised; a refused item does not stop the others."""
        layer = make_layer(capacity=1)
        layer.send("sb.full", {"x": 0})
        results = layer.send_many([
            ("srv!a", {"n": 1}), ("sb.full", {"n": 2}), ("bad name", {"n": 3}),
            ("sb.free", {"bad": object()}), ("srv!b", {"n": 5}), ("sb.other", {"n": 6}),
        ])
        assert results[0] is None and results[4] is None and results[5] is None
        assert isinstance(results[1], ChannelFull)
        assert isinstance(results[2], InvalidChannelName)
        assert isinstance(results[3], InvalidMessage)
        assert layer.receive_batch(["srv!"], 10) == [("srv!a", {"n": 1}), ("srv!b", {"n": 5})]
        assert layer.receive(["sb.other"]) == ("sb.other", {"n": 6})
        assert layer.receive(["sb.free"]) == (None, None)

    def test_send_many_keeps_each_channels_order(self, layer):
        """Messages for one channel in a ``send_many`` arrive in the order given."""
        items = [(f"srv!c{n % 3}", {"n": n}) for n in range(30)]
        assert layer.send_many(items) == [None] * 30
        got = layer.receive_batch(["srv!"], 100)
        for local in ("srv!c0", "srv!c1", "srv!c2"):
            numbers = [message["n"] for channel, message in got if channel == local]
            assert numbers == sorted(numbers) and len(numbers) == 10

    def test_send_many_of_nothing(self, layer):
        """``send_many([])`` returns ``[]``."""
        assert layer.send_many([]) == []

    def test_send_many_async_reports_each_outcome_in_order(self, make_layer):
        """``send_many_async`` is ``send_many`` for asyncio callers: per item ``None`` or
        the error, each channel's messages queued in the order given."""
        layer = make_layer(capacity=1)
        layer.send("sb.full", {"x": 0})
        items = [("sb.full", {"n": -1}), ("bad name", {"n": -2}),
                 *((f"srv!c{n % 3}", {"n": n}) for n in range(30))]
        results = asyncio.run(layer.send_many_async(items))
        assert isinstance(results[0], ChannelFull)
        assert isinstance(results[1], InvalidChannelName)
        assert results[2:] == [None] * 30
        got = layer.receive_batch(["srv!"], 100)
        for local in ("srv!c0", "srv!c1", "srv!c2"):
            numbers = [message["n"] for channel, message in got if channel == local]
            assert numbers == sorted(numbers) and len(numbers) == 10


    def test_receive_batch_takes_what_is_waiting_in_order(self, layer):
        """``receive_batch`` returns up to ``max_messages`` messages in receive order."""
        for n in range(5):
            layer.send(f"srv!c{n % 2}", {"n": n})
        first = layer.receive_batch(["srv!"], 3)
        assert [message["n"] for _, message in first] == [0, 1, 2]
        assert [channel for channel, _ in first] == ["srv!c0", "srv!c1", "srv!c0"]
        assert [m["n"] for _, m in layer.receive_batch(["srv!"], 3)] == [3, 4]
        assert layer.receive_batch(["srv!"], 3) == []

    def test_receive_batch_drops_expired_messages(self, make_layer, clock):
        """Expired messages are not part of a batch."""
        layer = make_layer(expiry=10)
        layer.send("srv!a", {"n": 1})
        clock.advance(6)
        layer.send("srv!a", {"n": 2})
        clock.advance(6)
        assert layer.receive_batch(["srv!"], 10) == [("srv!a", {"n": 2})]

    def test_receive_batch_blocks_for_the_first_message(self, layer):
        """A blocking batch waits for a first message, and times out with ``[]``."""
        assert layer.receive_batch(["srv!"], 5, block=True, timeout=SHORT_WAIT) == []
        timer = threading.Timer(0.05, layer.send, ("srv!late", {"x": 1}))
        timer.start()
        try:
            assert layer.receive_batch(["srv!"], 5, block=True, timeout=5) == [
                ("srv!late", {"x": 1})]
        finally:
            timer.join()

    def test_receive_batch_async(self, layer):
        """``receive_batch_async`` waits without blocking the loop and returns the batch."""

        async def scenario() -> Any:
            waiting = asyncio.ensure_future(layer.receive_batch_async(["srv!"], 10, timeout=5))
            await asyncio.sleep(0.05)
            await layer.send_async("srv!a", {"n": 1})
            return await waiting

        got = asyncio.run(scenario())
        assert got[0] == ("srv!a", {"n": 1})

    @pytest.mark.parametrize("bad", [0, -1, 1.5, True, "10"])
    def test_receive_batch_checks_max_messages(self, layer, bad):
        """``max_messages`` must be a positive int."""
        with pytest.raises(ValueError, match="max_messages"):
            layer.receive_batch(["srv!"], bad)

    # -- values ------------------------------------------------------------

    def test_value_types_round_trip(self, layer):
        """bytes and str stay distinct; ints, floats, bools, None, lists, dicts survive."""
        message = {
            "bytes": b"\x00\xffraw",
            "str": "text \u2603",
            "empty_bytes": b"",
            "empty_str": "",
            "int": -(2**63),
            "big": 2**63 - 1,
            "float": 1.5,
            "true": True,
            "false": False,
            "none": None,
            "list": [1, "two", b"three", [4.0]],
            "dict": {"nested": {"deep": [b"x"]}},
        }
        layer.send("sb.types", message)
        _, got = layer.receive(["sb.types"])
        assert got == message
        assert type(got["bytes"]) is bytes and type(got["str"]) is str
        assert type(got["true"]) is bool and type(got["int"]) is int

    def test_tuples_arrive_as_lists(self, layer):
        """A tuple is carried as a list."""
        layer.send("sb.tuple", {"pair": ("a", 1)})
        assert layer.receive(["sb.tuple"])[1] == {"pair": ["a", 1]}

    @pytest.mark.parametrize(
        ("message", "path"),
        [
            ({"when": object()}, "message['when']"),
            ({"nested": {"set": {1, 2}}}, "message['nested']['set']"),
            ({"list": [1, 2, 1j]}, "message['list'][2]"),
            ({1: "int key"}, "message"),
            ({"huge": 2**64}, "message['huge']"),
        ],
    )
    def test_bad_values_fail_at_send_naming_the_path(self, layer, message, path):
        """A value the wire cannot carry raises ``InvalidMessage`` at send, naming where."""
        with pytest.raises(InvalidMessage) as caught:
            layer.send("sb.bad", message)
        assert path in str(caught.value)
        assert layer.receive(["sb.bad"]) == (None, None)

    @pytest.mark.parametrize("message", [[1, 2], "text", None, b"raw"])
    def test_message_must_be_a_dict(self, layer, message):
        """A message that is not a dict raises ``InvalidMessage``."""
        with pytest.raises(InvalidMessage, match="dict"):
            layer.send("sb.bad", message)

    def test_mutation_after_send_is_invisible(self, layer):
        """Changing a message after sending it does not change what is received."""
        message = {"list": [1], "dict": {"k": "v"}}
        layer.send("sb.copy", message)
        message["list"].append(2)
        message["dict"]["k"] = "changed"
        assert layer.receive(["sb.copy"])[1] == {"list": [1], "dict": {"k": "v"}}

    # -- size limit --------------------------------------------------------

    def test_message_too_large_is_raised(self, make_layer):
        """A message over ``max_message_size`` raises ``MessageTooLarge``; nothing is queued."""
        layer = make_layer(max_message_size=1000)
        with pytest.raises(MessageTooLarge, match="1000"):
            layer.send("sb.big", {"data": b"x" * 1000})
        assert layer.receive(["sb.big"]) == (None, None)

    def test_message_under_the_limit_passes(self, make_layer):
        """A message just under ``max_message_size`` is carried whole."""
        layer = make_layer(max_message_size=1000)
        layer.send("sb.big", {"data": b"x" * 980})
        assert layer.receive(["sb.big"])[1]["data"] == b"x" * 980

    def test_default_limit_is_one_mebibyte(self, layer):
        """By default a 1 MiB payload is refused and a 1,000,000-byte one passes."""
        with pytest.raises(MessageTooLarge):
            layer.send("sb.big", {"data": b"x" * (1024 * 1024)})
        layer.send("sb.big", {"data": b"x" * 1_000_000})
        assert len(layer.receive(["sb.big"])[1]["data"]) == 1_000_000

    def test_group_send_checks_the_size_limit(self, make_layer):
        """``send_group`` raises ``MessageTooLarge`` too, before delivering to anyone."""
        layer = make_layer(max_message_size=100)
        layer.group_add("room", "sb.member")
        with pytest.raises(MessageTooLarge):
            layer.send_group("room", {"data": b"x" * 200})
        assert layer.receive(["sb.member"]) == (None, None)

    # -- capacity ----------------------------------------------------------

    def test_capacity_raises_channel_full(self, make_layer):
        """The send after ``capacity`` unread messages raises ``ChannelFull``."""
        layer = make_layer(capacity=5)
        for n in range(5):
            layer.send("sb.cap", {"n": n})
        with pytest.raises(ChannelFull, match=r"sb\.cap"):
            layer.send("sb.cap", {"n": 5})
        assert [layer.receive(["sb.cap"])[1]["n"] for _ in range(5)] == list(range(5))

    def test_receiving_frees_capacity(self, make_layer):
        """After a receive, a full channel accepts one more message."""
        layer = make_layer(capacity=2)
        layer.send("sb.cap", {"n": 0})
        layer.send("sb.cap", {"n": 1})
        layer.receive(["sb.cap"])
        layer.send("sb.cap", {"n": 2})
        assert layer.channel_statistics("sb.cap")["messages_pending"] == 2

    def test_capacity_is_per_channel(self, make_layer):
        """One full channel does not stop sends to another."""
        layer = make_layer(capacity=1)
        layer.send("sb.a", {"x": 1})
        layer.send("sb.b", {"x": 1})
        with pytest.raises(ChannelFull):
            layer.send("sb.a", {"x": 2})

    def test_channel_capacity_by_glob_and_regex_first_match_wins(self, make_layer):
        """``channel_capacity`` rules apply in order: a glob or regex, first match wins."""
        layer = make_layer(
            capacity=2,
            channel_capacity={"sb.small.*": 1, re.compile(r"sb\.big\..*"): 4, "sb.*": 3},
        )
        assert layer.get_capacity("sb.small.x") == 1
        assert layer.get_capacity("sb.big.x") == 4
        assert layer.get_capacity("sb.other") == 3
        assert layer.get_capacity("elsewhere") == 2
        layer.send("sb.small.x", {"x": 1})
        with pytest.raises(ChannelFull):
            layer.send("sb.small.x", {"x": 2})
        for _ in range(4):
            layer.send("sb.big.x", {"x": 1})
        with pytest.raises(ChannelFull):
            layer.send("sb.big.x", {"x": 2})

    def test_channel_full_is_counted(self, make_layer):
        """Each refused send increments ``channel_full_count``."""
        layer = make_layer(capacity=1)
        layer.send("sb.cap", {"x": 1})
        for _ in range(3):
            with pytest.raises(ChannelFull):
                layer.send("sb.cap", {"x": 1})
        assert layer.channel_statistics("sb.cap")["channel_full_count"] == 3
        assert layer.global_statistics()["channel_full_count"] == 3

    # -- expiry ------------------------------------------------------------

    def test_message_expires_unread(self, make_layer, clock):
        """A message older than ``expiry`` is not delivered."""
        layer = make_layer(expiry=10)
        layer.send("sb.exp", {"x": 1})
        clock.advance(10.5)
        assert layer.receive(["sb.exp"]) == (None, None)

    def test_message_within_expiry_is_delivered(self, make_layer, clock):
        """A message younger than ``expiry`` is delivered."""
        layer = make_layer(expiry=10)
        layer.send("sb.exp", {"x": 1})
        clock.advance(9.5)
        assert layer.receive(["sb.exp"]) == ("sb.exp", {"x": 1})

    def test_expiry_keeps_later_messages(self, make_layer, clock):
        """Only the expired messages are dropped; later ones on the channel remain."""
        layer = make_layer(expiry=10)
        layer.send("sb.exp", {"n": 1})
        clock.advance(6)
        layer.send("sb.exp", {"n": 2})
        clock.advance(6)
        assert layer.receive(["sb.exp"]) == ("sb.exp", {"n": 2})
        assert layer.receive(["sb.exp"]) == (None, None)

    def test_expiry_frees_capacity(self, make_layer, clock):
        """Expired messages do not count against capacity."""
        layer = make_layer(expiry=10, capacity=2)
        layer.send("sb.exp", {"n": 1})
        layer.send("sb.exp", {"n": 2})
        clock.advance(11)
        layer.send("sb.exp", {"n": 3})
        layer.send("sb.exp", {"n": 4})
        assert layer.receive(["sb.exp"]) == ("sb.exp", {"n": 3})

    def test_expired_messages_are_counted(self, make_layer, clock):
        """Each message dropped by expiry increments ``messages_expired_count``."""
        layer = make_layer(expiry=10)
        layer.send("sb.exp", {"n": 1})
        layer.send("sb.exp", {"n": 2})
        clock.advance(11)
        layer.receive(["sb.exp"])
        assert layer.channel_statistics("sb.exp")["messages_expired_count"] == 2
        assert layer.global_statistics()["messages_expired_count"] == 2

    # -- groups ------------------------------------------------------------

    def test_group_send_reaches_every_member(self, layer):
        """``send_group`` delivers the message to every member channel."""
        members = ["sb.m1", "sb.m2", "srv!conn1", "srv!conn2"]
        for channel in members:
            layer.group_add("room", channel)
        assert layer.send_group("room", {"text": "hi"}) == 4
        got = [layer.receive(["sb.m1"]), layer.receive(["sb.m2"]),
               layer.receive(["srv!"]), layer.receive(["srv!"])]
        assert sorted(channel for channel, _ in got) == sorted(members)
        assert all(message == {"text": "hi"} for _, message in got)

    def test_group_channels_lists_members(self, layer):
        """``group_channels`` lists each member once, however often it was added."""
        layer.group_add("room", "sb.m1")
        layer.group_add("room", "sb.m2")
        layer.group_add("room", "sb.m1")
        assert sorted(layer.group_channels("room")) == ["sb.m1", "sb.m2"]

    def test_group_discard(self, layer):
        """A discarded channel receives no more group messages; discarding twice is fine."""
        layer.group_add("room", "sb.m1")
        layer.group_add("room", "sb.m2")
        layer.group_discard("room", "sb.m1")
        layer.group_discard("room", "sb.m1")
        layer.group_discard("room", "sb.never")
        layer.send_group("room", {"x": 1})
        assert layer.receive(["sb.m1"]) == (None, None)
        assert layer.receive(["sb.m2"]) == ("sb.m2", {"x": 1})
        assert layer.group_channels("room") == ["sb.m2"]

    def test_send_to_empty_group_does_nothing(self, layer):
        """``send_group`` to a group with no members delivers nothing and raises nothing."""
        assert layer.send_group("nobody-home", {"x": 1}) == 0
        assert layer.group_channels("nobody-home") == []

    def test_groups_are_independent(self, layer):
        """A channel in two groups gets messages from both; groups do not leak."""
        layer.group_add("g1", "sb.both")
        layer.group_add("g2", "sb.both")
        layer.group_add("g2", "sb.only2")
        layer.send_group("g1", {"from": 1})
        assert layer.receive(["sb.only2"]) == (None, None)
        assert layer.receive(["sb.both"]) == ("sb.both", {"from": 1})

    def test_group_membership_expires(self, make_layer, clock):
        """A membership not renewed within ``group_expiry`` ends."""
        layer = make_layer(group_expiry=100)
        layer.group_add("room", "sb.old")
        clock.advance(60)
        layer.group_add("room", "sb.new")
        clock.advance(50)
        assert layer.group_channels("room") == ["sb.new"]
        layer.send_group("room", {"x": 1})
        assert layer.receive(["sb.old"]) == (None, None)

    def test_group_add_renews_membership(self, make_layer, clock):
        """Adding a member again restarts its ``group_expiry``."""
        layer = make_layer(group_expiry=100)
        layer.group_add("room", "sb.m")
        clock.advance(90)
        layer.group_add("room", "sb.m")
        clock.advance(90)
        assert layer.group_channels("room") == ["sb.m"]

    def test_expired_message_evicts_channel_from_groups(self, make_layer, clock):
        """A channel that lets a message expire unread is removed from all its groups."""
        layer = make_layer(expiry=10)
        layer.group_add("g1", "sb.dead")
        layer.group_add("g2", "sb.dead")
        layer.group_add("g1", "sb.alive")
        layer.send_group("g1", {"n": 1})
        assert layer.receive(["sb.alive"]) == ("sb.alive", {"n": 1})
        clock.advance(11)
        assert layer.group_channels("g1") == ["sb.alive"]
        assert layer.group_channels("g2") == []

    def test_expired_process_channel_evicts_only_itself(self, make_layer, clock):
        """An expired ``srv!a`` message evicts ``srv!a``, not its sibling ``srv!b``."""
        layer = make_layer(expiry=10)
        layer.group_add("room", "srv!a")
        layer.send("srv!a", {"x": 1})
        clock.advance(11)
        layer.group_add("room", "srv!b")
        assert layer.group_channels("room") == ["srv!b"]

    def test_group_send_skips_full_members_and_counts_them(self, make_layer):
        """A full member misses the group message; others get it; the miss is counted."""
        layer = make_layer(capacity=1)
        layer.group_add("room", "sb.full")
        layer.group_add("room", "sb.free")
        layer.send("sb.full", {"first": True})
        assert layer.send_group("room", {"x": 1}) == 1
        assert layer.receive(["sb.free"]) == ("sb.free", {"x": 1})
        assert layer.receive(["sb.full"]) == ("sb.full", {"first": True})
        assert layer.channel_statistics("sb.full")["group_send_dropped_count"] == 1
        assert layer.global_statistics()["group_send_dropped_count"] == 1

    def test_groups_lists_the_groups_with_members(self, layer):
        """``groups()`` names every group with a member, sorted; an emptied group and a
        flushed layer list none."""
        assert layer.groups() == []
        layer.group_add("room", "sb.a")
        layer.group_add("room", "srv!b")
        layer.group_add("lobby", "sb.a")
        assert layer.groups() == ["lobby", "room"]
        layer.group_discard("room", "sb.a")
        layer.group_discard("room", "srv!b")
        assert layer.groups() == ["lobby"]
        layer.flush()
        assert layer.groups() == []

    def test_groups_forget_expired_memberships(self, make_layer, clock):
        """A group whose every membership is older than ``group_expiry`` is not listed."""
        layer = make_layer(group_expiry=100)
        layer.group_add("old", "sb.a")
        clock.advance(60)
        layer.group_add("new", "sb.a")
        clock.advance(50)
        assert layer.groups() == ["new"]

    # -- flush -------------------------------------------------------------

    def test_flush_empties_channels_and_groups(self, layer):
        """After ``flush`` no message, group or counter remains."""
        layer.send("sb.f", {"x": 1})
        layer.send("srv!x", {"x": 1})
        layer.group_add("room", "sb.f")
        layer.flush()
        assert layer.receive(["sb.f", "srv!"]) == (None, None)
        assert layer.group_channels("room") == []
        assert layer.global_statistics()["messages_count"] == 0

    # -- statistics --------------------------------------------------------

    def test_statistics_keys(self, layer):
        """Both statistics calls return every documented counter."""
        assert set(STATISTICS_KEYS) <= set(layer.global_statistics())
        assert set(STATISTICS_KEYS) | {"capacity"} <= set(layer.channel_statistics("sb.s"))

    def test_statistics_count_and_age(self, make_layer, clock):
        """Counts of sent and pending messages, and the oldest pending message's age."""
        layer = make_layer(capacity=7)
        layer.send("sb.s", {"n": 1})
        clock.advance(4)
        layer.send("sb.s", {"n": 2})
        layer.send("sb.t", {"n": 3})
        stats = layer.channel_statistics("sb.s")
        assert stats["messages_count"] == 2
        assert stats["messages_pending"] == 2
        assert stats["messages_max_age"] == pytest.approx(4, abs=0.01)
        assert stats["capacity"] == 7
        layer.receive(["sb.s"])
        assert layer.channel_statistics("sb.s")["messages_pending"] == 1
        totals = layer.global_statistics()
        assert totals["messages_count"] == 3
        assert totals["messages_pending"] == 2

    def test_statistics_of_process_channel_use_the_prefix(self, layer):
        """``channel_statistics("srv!a")`` reports the shared ``srv!`` queue."""
        layer.send("srv!a", {"x": 1})
        layer.send("srv!b", {"x": 1})
        assert layer.channel_statistics("srv!a")["messages_pending"] == 2
        assert layer.channel_statistics("srv!")["messages_pending"] == 2

    def test_single_reader_channels_count_in_totals_only(self, layer):
        """``?`` channels add to the totals; their own counters stay 0, pending is exact."""
        channel = layer.new_channel("sb.reply?")
        layer.send(channel, {"x": 1})
        stats = layer.channel_statistics(channel)
        assert (stats["messages_count"], stats["messages_pending"]) == (0, 1)
        assert layer.global_statistics()["messages_count"] == 1

    # -- registry ----------------------------------------------------------

    def test_registered_process_is_live(self, layer):
        """A registered process is listed with its info until its ttl runs out."""
        info = {"channels": ["http.request", "websocket.*"], "pid": 42, "busy": False}
        layer.register_process("worker", "w1", info, ttl=10)
        layer.register_process("server", "s1", {"pid": 7}, ttl=10)
        assert layer.live_processes("worker") == {"w1": info}
        assert layer.live_processes("server") == {"s1": {"pid": 7}}
        assert layer.live_processes("nobody") == {}

    def test_registration_expires_without_heartbeat(self, layer, clock):
        """A process that stops renewing its registration drops out after ``ttl``."""
        layer.register_process("worker", "w1", {}, ttl=10)
        layer.register_process("worker", "w2", {}, ttl=10)
        clock.advance(6)
        layer.register_process("worker", "w2", {"beat": 2}, ttl=10)
        clock.advance(6)
        assert layer.live_processes("worker") == {"w2": {"beat": 2}}

    def test_unregister_process(self, layer):
        """An unregistered process is gone at once; unregistering twice is fine."""
        layer.register_process("worker", "w1", {}, ttl=10)
        layer.unregister_process("worker", "w1")
        layer.unregister_process("worker", "w1")
        assert layer.live_processes("worker") == {}

    def test_registry_validates_its_input(self, layer):
        """Bad names, bad info and a non-positive ttl are refused with clear errors."""
        with pytest.raises(InvalidChannelName):
            layer.register_process("worker", "has space", {}, ttl=10)
        with pytest.raises(InvalidMessage):
            layer.register_process("worker", "w1", {"x": object()}, ttl=10)
        with pytest.raises(ValueError, match="ttl"):
            layer.register_process("worker", "w1", {}, ttl=0)

    # -- blocking receive --------------------------------------------------

    def test_blocking_receive_times_out(self, layer):
        """``receive(block=True, timeout=t)`` returns ``(None, None)`` after about t."""
        started = time.monotonic()
        assert layer.receive(["sb.quiet"], block=True, timeout=SHORT_WAIT) == (None, None)
        waited = time.monotonic() - started
        assert SHORT_WAIT * 0.9 <= waited < SHORT_WAIT + 2

    def test_blocking_receive_wakes_on_send(self, layer):
        """A blocked receiver is woken by a send from another thread, well before timeout."""
        with BlockedReceive(lambda: layer.receive(["sb.wake"], block=True, timeout=10)) as reader:
            layer.send("sb.wake", {"x": 1})
        assert reader.results == [("sb.wake", {"x": 1})]
        assert reader.waited < 2

    def test_blocking_receive_returns_waiting_message_at_once(self, layer):
        """A blocking receive with a message already queued does not wait."""
        layer.send("sb.ready", {"x": 1})
        started = time.monotonic()
        assert layer.receive(["sb.ready"], block=True, timeout=5) == ("sb.ready", {"x": 1})
        assert time.monotonic() - started < 1

    def test_at_most_once_under_concurrent_receivers(self, make_layer):
        """Concurrent receiving threads get each message exactly once."""
        layer = make_layer(capacity=1000)
        self._race([layer] * 4, total=200)

    @staticmethod
    def _race(layers: list[BaseChannelLayer], total: int, receipts: bool = False) -> None:
        """Send ``total`` numbered messages through ``layers[0]``, let one thread per
        entry of ``layers`` receive until none is left, and check that each message
        was received once. ``receipts``: the at-least-once channel ``sb.task.race``,
        taken with ``receive_with_receipt`` (each with a receipt), not ``sb.race``."""
        name = "sb.task.race" if receipts else "sb.race"
        for n in range(total):
            layers[0].send(name, {"n": n})
        got: list[int] = []
        lock = threading.Lock()

        def receive(layer: BaseChannelLayer) -> tuple[str | None, Any]:
            if not receipts:
                return layer.receive([name])
            channel, message, receipt = layer.receive_with_receipt([name])
            assert channel is None or receipt is not None
            return channel, message

        def drain(layer: BaseChannelLayer) -> None:
            while True:
                channel, message = receive(layer)
                if channel is None:
                    return
                with lock:
                    got.append(message["n"])

        threads = [threading.Thread(target=drain, args=(lay,)) for lay in layers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert sorted(got) == list(range(total))

    # -- the async face ----------------------------------------------------

    def test_async_send_and_receive(self, layer):
        """``send_async`` and ``receive_async`` carry a message like their sync twins."""

        async def scenario() -> Any:
            await layer.send_async("sb.async", {"x": b"1"})
            return await layer.receive_async(["sb.async"], timeout=1)

        assert asyncio.run(scenario()) == ("sb.async", {"x": b"1"})

    def test_async_receive_times_out(self, layer):
        """``receive_async`` returns ``(None, None)`` after its timeout."""

        async def scenario() -> Any:
            return await layer.receive_async(["sb.none"], timeout=SHORT_WAIT)

        started = time.monotonic()
        assert asyncio.run(scenario()) == (None, None)
        assert time.monotonic() - started >= SHORT_WAIT * 0.9

    def test_async_receive_wakes_without_blocking_the_loop(self, layer):
        """A waiting ``receive_async`` lets other tasks run and wakes on a later send."""
        ticks: list[int] = []

        async def ticker() -> None:
            for n in range(5):
                ticks.append(n)
                await asyncio.sleep(0.01)

        async def scenario() -> Any:
            waiting = asyncio.ensure_future(layer.receive_async(["srv!"], timeout=5))
            await ticker()
            await layer.send_async("srv!z", {"late": True})
            return await waiting

        assert asyncio.run(scenario()) == ("srv!z", {"late": True})
        assert ticks == [0, 1, 2, 3, 4]

    def test_async_receive_wakes_on_send_from_a_thread(self, layer):
        """A sync send from another thread wakes an event loop's ``receive_async``."""

        async def scenario() -> Any:
            timer = threading.Timer(0.05, layer.send, ("sb.thread", {"x": 1}))
            timer.start()
            try:
                return await layer.receive_async(["sb.thread"], timeout=5)
            finally:
                timer.join()

        assert asyncio.run(scenario()) == ("sb.thread", {"x": 1})

    def test_async_send_raises_channel_full(self, make_layer):
        """``send_async`` raises ``ChannelFull`` like ``send``."""
        layer = make_layer(capacity=1)

        async def scenario() -> None:
            await layer.send_async("sb.full", {"x": 1})
            await layer.send_async("sb.full", {"x": 2})

        with pytest.raises(ChannelFull):
            asyncio.run(scenario())

    # -- at-least-once delivery (acks) ---------------------------------------

    @pytest.fixture
    def acks_layer(self, make_layer) -> BaseChannelLayer:
        return make_layer(**ACK_OPTIONS)

    @staticmethod
    def _take(layer: BaseChannelLayer, channel: str) -> tuple[Any, Any]:
        """``(message, receipt)`` of one ``receive_with_receipt`` on ``channel``."""
        got, message, receipt = layer.receive_with_receipt([channel])
        assert got == (channel if message is not None else None)
        return message, receipt

    @pytest.mark.parametrize("options", [
        {"at_least_once": [""]}, {"at_least_once": [42]}, {"at_least_once": 42},
        {"at_least_once": {"sb.*": 1}}, {"ack_timeout": 0}, {"ack_timeout": -5},
        {"ack_timeout": True}, {"ack_timeout": "soon"},
    ])
    def test_at_least_once_options_are_validated(self, make_layer, options):
        """Bad ``at_least_once`` patterns and a non-positive ``ack_timeout`` raise
        ``LayerConfigError`` naming the option."""
        with pytest.raises(LayerConfigError, match=next(iter(options))):
            make_layer(**options)

    def test_at_least_once_patterns_match_normal_channels_only(self, make_layer):
        """Globs, regexes and comma-separated globs select normal channels; ``?`` and ``!``
        channels are never at-least-once."""
        layer = make_layer(at_least_once="sb.task.*, sb.job")
        assert layer.is_at_least_once("sb.task.a") and layer.is_at_least_once("sb.job")
        assert not layer.is_at_least_once("sb.other")
        assert not layer.is_at_least_once("sb.task.reply?abc")
        assert not layer.is_at_least_once("sb.task.srv!abc")
        assert not make_layer().is_at_least_once("sb.task.a")

    def test_receipt_only_for_at_least_once_channels(self, acks_layer):
        """``receive_with_receipt`` gives a ``Receipt`` (deliveries 1) for matching normal
        channels only, and the message exactly as sent."""
        layer = acks_layer
        reply = layer.new_channel("sb.task.reply?")
        for channel in ["sb.task.a", "sb.job", "sb.other", reply, "sb.task.srv!x"]:
            layer.send(channel, {"on": channel})
        for channel in ["sb.task.a", "sb.job"]:
            message, receipt = self._take(layer, channel)
            assert message == {"on": channel}
            assert isinstance(receipt, Receipt) and isinstance(receipt, str)
            assert receipt.deliveries == 1 and receipt.token == str(receipt)
        for channel in ["sb.other", reply]:
            assert self._take(layer, channel) == ({"on": channel}, None)
        assert layer.receive_with_receipt(["sb.task.srv!"]) == (
            "sb.task.srv!x", {"on": "sb.task.srv!x"}, None)
        assert layer.receive_with_receipt(["sb.task.a", "sb.other"]) == (None, None, None)

    def test_ack_removes_the_message(self, acks_layer, clock):
        """An acknowledged message is gone for good; acknowledging it again returns False."""
        acks_layer.send("sb.task.a", {"x": 1})
        _, receipt = self._take(acks_layer, "sb.task.a")
        assert acks_layer.ack(receipt) is True
        assert acks_layer.ack(receipt) is False
        clock.advance(31)
        assert acks_layer.receive_with_receipt(["sb.task.a"]) == (None, None, None)

    def test_in_flight_message_is_invisible_until_ack_timeout(self, acks_layer, clock):
        """Until ``ack_timeout`` has passed, an unacknowledged message is delivered to
        nobody, through either receive."""
        acks_layer.send("sb.task.a", {"x": 1})
        self._take(acks_layer, "sb.task.a")
        clock.advance(29)
        assert acks_layer.receive_with_receipt(["sb.task.a"]) == (None, None, None)
        assert acks_layer.receive(["sb.task.a"]) == (None, None)

    def test_unacknowledged_messages_come_back_at_the_head_in_order(self, acks_layer, clock):
        """After ``ack_timeout`` unacknowledged messages are delivered again, in send order,
        before newer messages of their channel."""
        layer = acks_layer
        for n in range(4):
            layer.send("sb.task.a", {"n": n})
        receipts = [self._take(layer, "sb.task.a")[1] for _ in range(3)]
        assert layer.ack(receipts[1])
        clock.advance(30)
        layer.send("sb.task.a", {"n": 4})
        got = [self._take(layer, "sb.task.a") for _ in range(4)]
        assert [(message["n"], receipt.deliveries) for message, receipt in got] == [
            (0, 2), (2, 2), (3, 1), (4, 1)]

    def test_redeliveries_keep_send_order_across_timeouts(self, make_layer, clock):
        """Messages whose timeouts pass at different times still come back in send order."""
        layer = make_layer(**ACK_OPTIONS, expiry=200)
        for n in range(3):
            layer.send("sb.task.a", {"n": n})
        self._take(layer, "sb.task.a")              # 0, due again at 30
        clock.advance(10)
        self._take(layer, "sb.task.a")              # 1, due again at 40
        self._take(layer, "sb.task.a")              # 2, due again at 40
        clock.advance(21)
        assert self._take(layer, "sb.task.a")[0] == {"n": 0}  # taken again, due at 61
        clock.advance(10)                           # 1 and 2 are back
        clock.advance(20)                           # 0 is back, ahead of them
        got = [self._take(layer, "sb.task.a") for _ in range(3)]
        assert [(message["n"], receipt.deliveries) for message, receipt in got] == [
            (0, 3), (1, 2), (2, 2)]

    def test_deliveries_count_grows_and_message_is_unchanged(self, make_layer, clock):
        """Each redelivery has a new receipt whose ``deliveries`` is one more; the message
        itself never changes."""
        acks_layer = make_layer(**ACK_OPTIONS, expiry=200)
        acks_layer.send("sb.job", {"x": [1, b"2"]})
        seen = []
        for attempt in range(1, 4):
            message, receipt = self._take(acks_layer, "sb.job")
            assert message == {"x": [1, b"2"]}
            assert receipt.deliveries == attempt
            seen.append(receipt.token)
            clock.advance(30)
        assert len(set(seen)) == 3

    def test_stale_receipt_cannot_ack_a_redelivered_message(self, acks_layer, clock):
        """A receipt whose ``ack_timeout`` has passed acknowledges nothing; the new
        delivery's receipt does."""
        acks_layer.send("sb.task.a", {"x": 1})
        _, first = self._take(acks_layer, "sb.task.a")
        clock.advance(30)
        assert acks_layer.ack(first) is False
        _, second = self._take(acks_layer, "sb.task.a")
        assert acks_layer.ack(first) is False
        assert acks_layer.ack(second) is True
        clock.advance(30)
        assert acks_layer.receive(["sb.task.a"]) == (None, None)

    def test_expired_message_is_not_redelivered(self, make_layer, clock):
        """Expiry counts from the send: an unacknowledged message is never delivered after
        it, and a late ack returns False; each such message counts as expired once."""
        layer = make_layer(**ACK_OPTIONS, expiry=50)
        layer.send("sb.task.a", {"n": 1})           # expires at 50
        self._take(layer, "sb.task.a")
        clock.advance(30)
        _, again = self._take(layer, "sb.task.a")   # in flight until 60
        assert again.deliveries == 2
        clock.advance(30)                           # 60: it expired in flight
        assert layer.receive_with_receipt(["sb.task.a"]) == (None, None, None)
        assert layer.ack(again) is False
        layer.send("sb.task.a", {"n": 2})           # expires at 110
        clock.advance(25)
        _, late = self._take(layer, "sb.task.a")    # in flight until 115
        clock.advance(26)                           # 111: expired, not yet due again
        assert layer.ack(late) is False
        assert layer.receive_with_receipt(["sb.task.a"]) == (None, None, None)
        assert layer.channel_statistics("sb.task.a")["messages_expired_count"] == 2

    def test_plain_receive_acknowledges_at_once(self, acks_layer, clock):
        """``receive`` on an at-least-once channel takes the message for good
        (at-most-once for that call)."""
        acks_layer.send("sb.task.a", {"x": 1})
        assert acks_layer.receive(["sb.task.a"]) == ("sb.task.a", {"x": 1})
        clock.advance(31)
        assert acks_layer.receive_with_receipt(["sb.task.a"]) == (None, None, None)

    def test_ack_of_an_unknown_receipt_returns_false(self, acks_layer):
        """``ack`` of a receipt no layer made returns ``False``; a non-str raises
        ``TypeError``."""
        for receipt in ["", "nonsense", "sb.task.a@zzz", "sb.task.a@1.zzz", "srv!@1",
                        "bad name@1", "sb.task.a@"]:
            assert acks_layer.ack(receipt) is False
        with pytest.raises(TypeError, match="receipt"):
            acks_layer.ack(None)

    def test_in_flight_messages_hold_capacity_but_are_not_pending(self, make_layer):
        """In-flight messages count against capacity, not in ``messages_pending``; an ack
        frees their room."""
        layer = make_layer(**ACK_OPTIONS, capacity=2)
        layer.send("sb.task.a", {"n": 1})
        layer.send("sb.task.a", {"n": 2})
        _, receipt = self._take(layer, "sb.task.a")
        assert layer.channel_statistics("sb.task.a")["messages_pending"] == 1
        with pytest.raises(ChannelFull):
            layer.send("sb.task.a", {"n": 3})
        assert layer.ack(receipt)
        layer.send("sb.task.a", {"n": 3})

    def test_receivers_never_share_an_in_flight_message(self, make_layer, clock):
        """Concurrent ``receive_with_receipt`` threads each get a different message; after
        ``ack_timeout`` all come back, in send order."""
        layer = make_layer(**ACK_OPTIONS, capacity=1000)
        self._race([layer] * 4, total=200, receipts=True)
        clock.advance(30)
        got = [layer.receive(["sb.task.race"])[1] for _ in range(200)]
        assert [message["n"] for message in got] == list(range(200))

    def test_blocking_receive_with_receipt_wakes_on_send(self, acks_layer):
        """A blocked ``receive_with_receipt`` on an at-least-once channel wakes on a send,
        well before its timeout, and gets a receipt."""
        with BlockedReceive(lambda: acks_layer.receive_with_receipt(
                ["sb.other", "sb.task.w"], block=True, timeout=10)) as reader:
            acks_layer.send("sb.task.w", {"x": 1})
        assert reader.waited < 2
        [(channel, message, receipt)] = reader.results
        assert (channel, message, receipt.deliveries) == ("sb.task.w", {"x": 1}, 1)
        assert acks_layer.ack(receipt)

    def test_async_receive_with_receipt_and_ack(self, acks_layer, clock):
        """``receive_with_receipt_async`` and ``ack_async`` work like their sync twins; a
        send wakes the wait, and an unacknowledged message comes back."""

        async def scenario() -> Any:
            waiting = asyncio.ensure_future(
                acks_layer.receive_with_receipt_async(["sb.task.a"], timeout=5))
            await asyncio.sleep(0.05)
            await acks_layer.send_async("sb.task.a", {"x": 1})
            await acks_layer.send_async("sb.task.a", {"x": 2})
            _, first, receipt = await waiting
            assert (first, receipt.deliveries) == ({"x": 1}, 1)
            assert await acks_layer.ack_async(receipt) is True
            assert await acks_layer.ack_async(receipt) is False
            _, second, dropped = await acks_layer.receive_with_receipt_async(
                ["sb.task.a"], timeout=1)
            assert second == {"x": 2}
            clock.advance(30)
            _, again, receipt = await acks_layer.receive_with_receipt_async(
                ["sb.task.a"], timeout=1)
            assert (again, receipt.deliveries) == ({"x": 2}, 2)
            assert await acks_layer.ack_async(dropped) is False
            return await acks_layer.receive_with_receipt_async(["sb.task.a"], timeout=0.1)

        assert asyncio.run(scenario()) == (None, None, None)

    # -- scheduled messages (delay) ----------------------------------------

    def test_send_later_waits_until_due(self, layer, clock):
        """A scheduled message is not in its channel before its delay has passed, and
        ``deliver_due`` moves nothing early."""
        assert layer.next_due() is None
        layer.send_later("sb.later", {"x": 1}, 10)
        assert layer.next_due() == pytest.approx(clock() + 10)
        clock.advance(9)
        assert layer.deliver_due() == 0
        assert layer.receive(["sb.later"]) == (None, None)
        clock.advance(1)
        assert layer.deliver_due() == 1
        assert layer.receive(["sb.later"]) == ("sb.later", {"x": 1})
        assert layer.next_due() is None

    def test_deliver_due_moves_messages_in_due_order(self, layer, clock):
        """``deliver_due`` moves due messages earliest due first, ties in scheduling
        order, behind what the channel already holds."""
        layer.send_later("sb.later", {"n": "a"}, 5)
        layer.send_later("sb.later", {"n": "b"}, 3)
        layer.send_later("sb.later", {"n": "c"}, 3)
        layer.send_later("srv!x", {"n": "d"}, 0)
        layer.send("sb.later", {"n": "first"})
        assert layer.next_due() == pytest.approx(clock())
        clock.advance(5)
        assert layer.deliver_due() == 4
        got = [layer.receive(["sb.later"])[1]["n"] for _ in range(4)]
        assert got == ["first", "b", "c", "a"]
        assert layer.receive(["srv!"]) == ("srv!x", {"n": "d"})

    def test_send_later_checks_its_input(self, make_layer):
        """``send_later`` refuses bad names, bad messages, oversize messages and bad
        delays, and schedules nothing."""
        layer = make_layer(max_message_size=100)
        with pytest.raises(InvalidChannelName):
            layer.send_later("bad name", {"x": 1}, 1)
        with pytest.raises(InvalidMessage):
            layer.send_later("sb.later", {"x": object()}, 1)
        with pytest.raises(MessageTooLarge):
            layer.send_later("sb.later", {"x": b"x" * 200}, 1)
        for delay in [-1, float("inf"), float("nan"), "5", True, None]:
            with pytest.raises(ValueError, match="delay"):
                layer.send_later("sb.later", {"x": 1}, delay)
        for limit in [0, -1, 1.5, True]:
            with pytest.raises(ValueError, match="limit"):
                layer.deliver_due(limit)
        assert layer.next_due() is None

    def test_due_message_waits_for_room_in_a_full_channel(self, make_layer, clock):
        """A due message whose channel is full stays scheduled; a later ``deliver_due``
        moves it once there is room."""
        layer = make_layer(capacity=1)
        layer.send("sb.full", {"n": 1})
        layer.send_later("sb.full", {"n": 2}, 1)
        clock.advance(1)
        assert layer.deliver_due() == 0
        assert layer.next_due() is not None
        assert layer.receive(["sb.full"]) == ("sb.full", {"n": 1})
        assert layer.deliver_due() == 1
        assert layer.receive(["sb.full"]) == ("sb.full", {"n": 2})

    def test_delivered_message_expiry_counts_from_its_due_time(self, make_layer, clock):
        """A scheduled message expires ``expiry`` s after its due time, not after
        ``send_later``."""
        layer = make_layer(expiry=10)
        layer.send_later("sb.later", {"x": 1}, 100)
        clock.advance(100)
        assert layer.deliver_due() == 1
        clock.advance(9)
        assert layer.receive(["sb.later"]) == ("sb.later", {"x": 1})

    def test_undelivered_scheduled_message_expires(self, make_layer, clock):
        """A scheduled message still undelivered ``expiry`` s after its due time is dropped
        and counted in ``messages_expired_count``."""
        layer = make_layer(expiry=10)
        layer.send_later("sb.later", {"x": 1}, 5)
        clock.advance(16)
        assert layer.deliver_due() == 0
        assert layer.next_due() is None
        assert layer.receive(["sb.later"]) == (None, None)
        assert layer.channel_statistics("sb.later")["messages_expired_count"] == 1

    def test_deliver_due_respects_its_limit(self, layer, clock):
        """``deliver_due(limit)`` moves at most ``limit`` messages; the rest wait for the
        next call."""
        for n in range(3):
            layer.send_later("sb.later", {"n": n}, 1)
        clock.advance(1)
        assert layer.deliver_due(2) == 2
        assert layer.deliver_due() == 1
        assert [layer.receive(["sb.later"])[1]["n"] for _ in range(3)] == [0, 1, 2]

    def test_deliver_due_wakes_a_blocked_receiver(self, layer, clock):
        """Moving a due message into a channel wakes a receiver blocked on it."""
        layer.send_later("sb.later", {"x": 1}, 1)
        clock.advance(1)
        with BlockedReceive(lambda: layer.receive(["sb.later"], block=True, timeout=10)) as reader:
            assert layer.deliver_due() == 1
        assert reader.results == [("sb.later", {"x": 1})]
        assert reader.waited < 2

    def test_due_message_to_an_at_least_once_channel_gets_a_receipt(self, acks_layer, clock):
        """A delivered scheduled message on an at-least-once channel is received with a
        receipt like any other."""
        acks_layer.send_later("sb.task.a", {"x": 1}, 1)
        clock.advance(1)
        assert acks_layer.deliver_due() == 1
        message, receipt = self._take(acks_layer, "sb.task.a")
        assert message == {"x": 1} and receipt.deliveries == 1

    def test_flush_drops_scheduled_and_in_flight_messages(self, acks_layer, clock):
        """``flush`` drops scheduled messages and in-flight ones too."""
        acks_layer.send("sb.task.a", {"x": 1})
        _, receipt = self._take(acks_layer, "sb.task.a")
        acks_layer.send_later("sb.later", {"x": 1}, 1)
        acks_layer.flush()
        clock.advance(31)
        assert acks_layer.next_due() is None
        assert acks_layer.deliver_due() == 0
        assert acks_layer.ack(receipt) is False
        assert acks_layer.receive(["sb.task.a", "sb.later"]) == (None, None)


class SharedLayerConformance(ChannelLayerConformance):
    """The suite for layers whose instances share storage (several processes).

    Adds the cross-instance claims: what one instance sends, registers or
    groups is seen by another made by ``create_layer``.
    """

    def test_registry_is_shared_between_instances(self, make_layer):
        """A heartbeat written through one instance is seen through another."""
        first = make_layer()
        second = make_layer()
        first.register_process("worker", "w1", {"host": "a"}, ttl=10)
        assert second.live_processes("worker") == {"w1": {"host": "a"}}

    def test_blocking_receive_wakes_on_send_from_another_layer(self, make_layer):
        """A send through a second layer instance wakes a receiver blocked in the first."""
        first = make_layer()
        second = make_layer()
        with BlockedReceive(lambda: first.receive(["srv!"], block=True, timeout=10)) as reader:
            second.send("srv!x", {"x": 1})
        assert reader.results == [("srv!x", {"x": 1})]

    def test_messages_cross_layer_instances(self, make_layer):
        """A message sent through one layer instance is received through another."""
        first = make_layer()
        second = make_layer()
        first.send("sb.cross", {"x": 1})
        first.group_add("room", "sb.cross-member")
        second.send_group("room", {"y": 2})
        assert second.receive(["sb.cross"]) == ("sb.cross", {"x": 1})
        assert second.receive(["sb.cross-member"]) == ("sb.cross-member", {"y": 2})

    def test_at_most_once_across_instances(self, make_layer):
        """Receivers on two instances, two threads each, get each message exactly once."""
        first, second = make_layer(capacity=1000), make_layer(capacity=1000)
        self._race([first, second, first, second], total=200)

    def test_receipt_is_acknowledged_through_another_instance(self, make_layer, clock):
        """A message taken through one instance is acknowledged through another, with the
        receipt as plain text."""
        first, second = make_layer(**ACK_OPTIONS), make_layer(**ACK_OPTIONS)
        first.send("sb.task.a", {"x": 1})
        _, _, receipt = first.receive_with_receipt(["sb.task.a"])
        assert second.ack(str(receipt)) is True
        clock.advance(31)
        assert second.receive(["sb.task.a"]) == (None, None)

    def test_unacknowledged_message_is_redelivered_to_another_instance(self, make_layer,
                                                                      clock):
        """A message that one instance took and never acknowledged (its worker died) is
        delivered through another after ``ack_timeout``."""
        first, second = make_layer(**ACK_OPTIONS), make_layer(**ACK_OPTIONS)
        first.send("sb.task.a", {"x": 1})
        first.receive_with_receipt(["sb.task.a"])
        assert second.receive_with_receipt(["sb.task.a"]) == (None, None, None)
        clock.advance(30)
        channel, message, receipt = second.receive_with_receipt(["sb.task.a"])
        assert (channel, message, receipt.deliveries) == ("sb.task.a", {"x": 1}, 2)

    def test_in_flight_messages_are_not_shared_across_instances(self, make_layer):
        """Receivers on two instances, two threads each, never get the same message while
        it is in flight."""
        first = make_layer(**ACK_OPTIONS, capacity=1000)
        second = make_layer(**ACK_OPTIONS, capacity=1000)
        self._race([first, second, first, second], total=200, receipts=True)

    def test_blocking_receive_with_receipt_wakes_on_send_from_another_layer(self, make_layer):
        """A send through a second instance wakes a ``receive_with_receipt`` blocked on an
        at-least-once channel in the first."""
        first, second = make_layer(**ACK_OPTIONS), make_layer(**ACK_OPTIONS)
        with BlockedReceive(lambda: first.receive_with_receipt(
                ["sb.task.w"], block=True, timeout=10)) as reader:
            second.send("sb.task.w", {"x": 1})
        assert [(channel, message) for channel, message, _ in reader.results] == [
            ("sb.task.w", {"x": 1})]

    def test_scheduled_messages_outlive_the_scheduling_instance(self, make_layer, clock):
        """A message scheduled through one instance is delivered by ``deliver_due`` on
        another (a restarted delay server)."""
        first, second = make_layer(), make_layer()
        first.send_later("sb.later", {"x": 1}, 5)
        assert second.next_due() == pytest.approx(clock() + 5)
        clock.advance(5)
        assert second.deliver_due() == 1
        assert first.receive(["sb.later"]) == ("sb.later", {"x": 1})
