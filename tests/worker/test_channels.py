"""Tests for ``worker.channels``: Channel and Group, inside and outside a consumer."""

from __future__ import annotations

import pytest

from asgi_spec.exceptions import ChannelFull, InvalidChannelName, MessageFormatError
from tests.worker.helpers import drain, memory_layer
from worker.channels import Channel, Group
from worker.outbox import Outbox


def test_send_outside_a_consumer_is_immediate():
    """Without a running consumer, Channel.send reaches the layer at once."""
    layer = memory_layer()
    Channel("jobs", layer).send({"n": 1})
    assert drain(layer, "jobs") == [{"n": 1}]


def test_send_inside_a_consumer_is_held_until_flush():
    """Inside an active outbox, sends wait for flush(); immediately=True does not."""
    layer = memory_layer()
    outbox = Outbox(layer)
    with outbox.activate():
        Channel("jobs").send({"n": 1})
        Channel("jobs").send({"n": 2}, immediately=True)
        Group("g").send({"n": 3})
        assert drain(layer, "jobs") == [{"n": 2}]
    outbox.flush()
    assert drain(layer, "jobs") == [{"n": 1}]


def test_held_content_is_copied_at_send_time():
    """Changing a dict after sending it does not change the held message."""
    layer = memory_layer()
    outbox = Outbox(layer)
    content = {"n": 1}
    with outbox.activate():
        Channel("jobs").send(content)
    content["n"] = 2
    outbox.flush()
    assert drain(layer, "jobs") == [{"n": 1}]


def test_channel_without_layer_outside_consumer_is_an_error():
    """A Channel with no layer, used outside a consumer, raises a clear RuntimeError."""
    with pytest.raises(RuntimeError, match="no layer"):
        Channel("jobs").send({})
    with pytest.raises(RuntimeError, match="no layer"):
        Group("g").add("x")


def test_immediate_send_lets_channel_full_through():
    """immediately=True sends raise ChannelFull to the caller (it asked for it)."""
    layer = memory_layer(capacity=1)
    Channel("jobs", layer).send({})
    with pytest.raises(ChannelFull):
        Channel("jobs", layer).send({}, immediately=True)


def test_group_add_discard_send():
    """Group.add/discard change membership at once; send reaches current members."""
    layer = memory_layer()
    group = Group("room", layer)
    group.add(Channel("a!1"))
    group.add("b!2")
    group.discard("a!1")
    group.send({"text": "hi"})
    assert drain(layer, "a!") == []
    assert drain(layer, "b!") == [{"text": "hi"}]


def test_group_discard_can_wait_for_the_flush():
    """discard(immediately=False) inside a consumer ends the membership at flush, after the
    sends held before it; a discarded outbox (the consumer raised) leaves it as it was."""
    layer = memory_layer()
    Group("g", layer).add("srv!a")
    outbox = Outbox(layer)
    with outbox.activate():
        Channel("srv!a").send({"n": 1})
        Group("g").discard("srv!a", immediately=False)
        assert layer.group_channels("g") == ["srv!a"]
    outbox.flush()
    assert layer.group_channels("g") == []
    assert drain(layer, "srv!") == [{"n": 1}]
    Group("g", layer).add("srv!b")
    outbox = Outbox(layer)
    with outbox.activate():
        Group("g").discard("srv!b", immediately=False)
    outbox.discard()
    outbox.flush()
    assert layer.group_channels("g") == ["srv!b"]
    Group("g", layer).discard("srv!b", immediately=False)  # outside a consumer: now
    assert layer.group_channels("g") == []


def test_names_and_content_are_checked():
    """Bad names and non-dict content raise clear errors; named-channel formats are checked."""
    with pytest.raises(InvalidChannelName):
        Channel("bad name")
    with pytest.raises(InvalidChannelName):
        Group("a!b")
    with pytest.raises(TypeError, match="takes a dict"):
        Channel("x", memory_layer()).send([1])
    with pytest.raises(MessageFormatError, match="'reply_channel'"):
        Channel("http.request", memory_layer()).send({"method": "GET"})


def test_channel_equality_by_name():
    """Channels with the same name are equal and hash alike; str() is the name."""
    assert Channel("a") == Channel("a") and hash(Channel("a")) == hash(Channel("a"))
    assert Channel("a") != Channel("b")
    assert str(Channel("a")) == "a"


def test_channel_names_are_still_checked_when_seen_again(monkeypatch):
    """Channel validates each name once (a cache of valid names, bounded): an
    invalid name raises every time, a valid one is accepted again, and the
    cache empties instead of growing past its bound."""
    from worker import channels

    monkeypatch.setattr(channels, "_VALID_NAMES", {})
    monkeypatch.setattr(channels, "_VALID_NAMES_MAX", 3)
    for _ in range(2):
        with pytest.raises(InvalidChannelName):
            Channel("srv!")  # a prefix: not a channel to send to
        with pytest.raises(InvalidChannelName):
            Channel("bad name")
        assert Channel("srv!conn1").name == "srv!conn1"
    assert "bad name" not in channels._VALID_NAMES
    for n in range(10):
        Channel(f"srv!conn{n}")
    assert len(channels._VALID_NAMES) <= 3
    with pytest.raises(InvalidChannelName):
        Channel(123)  # type: ignore[arg-type]


def test_errors_still_name_the_channel_or_group():
    """A send of a non-dict, or without a layer outside a consumer, names its target."""
    with pytest.raises(TypeError, match=r"Channel\('jobs'\)\.send\(\) takes a dict, got list"):
        Channel("jobs", memory_layer()).send([1])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"Group\('g'\)\.send\(\) takes a dict, got str"):
        Group("g", memory_layer()).send("x")  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match=r"Channel\('jobs'\) has no layer"):
        Channel("jobs").send({"n": 1})
    with pytest.raises(RuntimeError, match=r"Group\('g'\) has no layer"):
        Group("g").add("jobs")
