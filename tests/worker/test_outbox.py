"""Tests for ``worker.outbox``: flush order, ChannelFull retry with backoff, never raising."""

from __future__ import annotations

import logging

from asgi_spec.exceptions import LayerUnavailable
from tests.worker.helpers import SleepRecorder, drain, memory_layer
from worker.channels import Channel, Group
from worker.outbox import Outbox, current_outbox, send_with_retry


class FlakyLayer:
    """Raises the given errors on the first sends, then records."""

    def __init__(self, *errors):
        self.errors = list(errors)
        self.sent = []

    def send(self, channel, content):
        if self.errors:
            raise self.errors.pop(0)
        self.sent.append((channel, content))


def test_activate_sets_and_resets_current_outbox():
    """activate() makes the outbox current only inside the block."""
    outbox = Outbox(memory_layer())
    assert current_outbox() is None
    with outbox.activate():
        assert current_outbox() is outbox
    assert current_outbox() is None


def test_flush_sends_in_order_and_discard_drops():
    """flush() sends held messages in send order; discard() drops them all."""
    layer = memory_layer()
    outbox = Outbox(layer)
    with outbox.activate():
        for n in range(3):
            Channel("q").send({"n": n})
    assert outbox.flush() == 3
    assert drain(layer, "q") == [{"n": 0}, {"n": 1}, {"n": 2}]
    with outbox.activate():
        Channel("q").send({"n": 9})
    outbox.discard()
    assert outbox.flush() == 0
    assert drain(layer, "q") == []


def test_channel_full_is_retried_until_there_is_room():
    """A ChannelFull send is retried after a backoff sleep and then delivered."""
    layer = memory_layer(capacity=1)
    layer.send("q", {"old": True})
    sleeps = []

    def sleep(seconds):
        sleeps.append(seconds)
        if len(sleeps) == 3:
            drain(layer, "q")  # a reader catches up during the third wait

    assert send_with_retry(layer, "q", {"new": True}, sleep=sleep)
    assert sleeps == [0.01, 0.02, 0.04]
    assert drain(layer, "q") == [{"new": True}]


def test_channel_full_gives_up_after_bounded_time_and_logs(caplog):
    """A channel that stays full is given up on after ~2 s of backoff, logged, not raised."""
    layer = memory_layer(capacity=1)
    layer.send("q", {})
    sleep = SleepRecorder()
    outbox = Outbox(layer, sleep=sleep)
    with outbox.activate():
        Channel("q").send({"n": 1})
        Channel("q").send({"n": 2})
        Channel("other").send({"n": 3})
    with caplog.at_level(logging.ERROR, logger="worker.outbox"):
        assert outbox.flush() == 1
    assert abs(sleep.total - 2.0) < 1e-9
    assert max(sleep.delays) <= 0.5
    assert "dropped a message to 'q'" in caplog.text and "ChannelFull" in caplog.text
    assert "an earlier one to it was dropped" in caplog.text  # {"n": 2} was not retried
    assert drain(layer, "other") == [{"n": 3}]


def test_layer_unavailable_is_retried():
    """A LayerUnavailable (a ConnectionError) during flush is retried like ChannelFull."""
    layer = FlakyLayer(LayerUnavailable("down"), LayerUnavailable("down"))
    sleep = SleepRecorder()
    assert send_with_retry(layer, "q", {"a": 1}, sleep=sleep)
    assert layer.sent == [("q", {"a": 1})] and len(sleep.delays) == 2


def test_unsendable_message_is_logged_not_retried(caplog):
    """A message the layer refuses outright (too large) is logged at once, not retried."""
    layer = memory_layer(max_message_size=100)
    sleep = SleepRecorder()
    with caplog.at_level(logging.ERROR, logger="worker.outbox"):
        assert not send_with_retry(layer, "q", {"x": "y" * 500}, sleep=sleep)
    assert sleep.delays == []
    assert "MessageTooLarge" in caplog.text


def test_group_send_flushes_to_members():
    """Held group sends are delivered to the group's members on flush."""
    layer = memory_layer()
    layer.group_add("g", "a!1")
    outbox = Outbox(layer)
    with outbox.activate():
        Group("g").send({"text": "x"})
    assert drain(layer, "a!") == []
    outbox.flush()
    assert drain(layer, "a!") == [{"text": "x"}]
