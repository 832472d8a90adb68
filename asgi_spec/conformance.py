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

from asgi_spec.base import STATISTICS_KEYS, BaseChannelLayer
from asgi_spec.exceptions import (
    ChannelFull,
    InvalidChannelName,
    InvalidMessage,
    MessageTooLarge,
)
from asgi_spec.testing import FakeClock

#: How long the blocking tests let a receiver wait, in real seconds.
SHORT_WAIT = 0.3


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
        """The layer lists the groups, flush, statistics, async and registry extensions."""
        assert {"groups", "flush", "statistics", "async", "registry"} <= set(layer.extensions)

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
        """Capacity of ``srv!a`` and ``srv!b`` is shared on ``srv!``."""
        layer = make_layer(capacity=3)
        for local in "abc":
            layer.send(f"srv!{local}", {"x": 1})
        with pytest.raises(ChannelFull):
            layer.send("srv!d", {"x": 1})

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
        result: list[Any] = []
        reader = threading.Thread(
            target=lambda: result.append(layer.receive(["sb.wake"], block=True, timeout=10))
        )
        reader.start()
        time.sleep(0.05)
        started = time.monotonic()
        layer.send("sb.wake", {"x": 1})
        reader.join(10)
        assert result == [("sb.wake", {"x": 1})]
        assert time.monotonic() - started < 2

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
    def _race(layers: list[BaseChannelLayer], total: int) -> None:
        for n in range(total):
            layers[0].send("sb.race", {"n": n})
        got: list[int] = []
        lock = threading.Lock()

        def drain(layer: BaseChannelLayer) -> None:
            while True:
                channel, message = layer.receive(["sb.race"])
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
        result: list[Any] = []
        reader = threading.Thread(
            target=lambda: result.append(first.receive(["srv!"], block=True, timeout=10))
        )
        reader.start()
        time.sleep(0.05)
        second.send("srv!x", {"x": 1})
        reader.join(10)
        assert result == [("srv!x", {"x": 1})]

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
