"""The worker on at-least-once channels: ack after the consumer returned and its sends
were flushed, redelivery after the layer's ack timeout when it raised (FakeClock)."""

from __future__ import annotations

import logging
from typing import Any

from asgi_spec.layers.memory import MemoryChannelLayer
from asgi_spec.testing import FakeClock
from tests.worker.helpers import SleepRecorder, drain
from worker.channels import Channel
from worker.exceptions import ConsumeLater
from worker.routing import route
from worker.worker import Worker

ACK_TIMEOUT = 10


def acks_layer(**options: Any) -> MemoryChannelLayer:
    """A memory layer where ``tasks.*`` is at-least-once, on a fake clock."""
    return MemoryChannelLayer(clock=FakeClock(), at_least_once=["tasks.*"],
                              ack_timeout=ACK_TIMEOUT, **options)


def make_worker(routing: Any, layer: MemoryChannelLayer, **options: Any) -> Worker:
    options.setdefault("sleep", SleepRecorder())
    options.setdefault("batch_size", 1)
    return Worker(layer, routing, **options)


def test_message_is_acknowledged_after_the_consumer_returned():
    """A consumer that returns has its sends flushed, then its message acknowledged:
    nothing comes back after the ack timeout."""
    layer = acks_layer()
    seen = []

    def task(message):
        seen.append(message["n"])
        Channel("tasks.done").send({"n": message["n"]})

    worker = make_worker([route("tasks.email", task)], layer)
    layer.send("tasks.email", {"n": 1})
    assert worker.run_once(block=False)
    layer.clock.advance(ACK_TIMEOUT)
    assert worker.run_once(block=False) is False
    assert seen == [1]
    assert drain(layer, "tasks.done") == [{"n": 1}]


def test_ack_comes_after_the_flush():
    """The held sends are in the layer before the ack is made."""
    layer = acks_layer()
    at_ack: list[list[dict]] = []
    real_ack = layer.ack

    def ack(receipt):
        at_ack.append(drain(layer, "tasks.done"))
        return real_ack(receipt)

    layer.ack = ack  # type: ignore[method-assign]
    worker = make_worker([route("tasks.email", lambda m: Channel("tasks.done").send({}))],
                         layer)
    layer.send("tasks.email", {})
    worker.run_once(block=False)
    assert at_ack == [[{}]]


def test_raising_consumer_leaves_the_message_for_redelivery(caplog):
    """When the consumer raises, its sends are dropped and the message is not
    acknowledged: it comes back after the ack timeout, and a later success acks it."""
    layer = acks_layer()
    attempts = []

    def flaky(message):
        attempts.append(message["n"])
        Channel("tasks.done").send({"attempt": len(attempts)})
        if len(attempts) < 3:
            raise RuntimeError("try again")

    worker = make_worker([route("tasks.flaky", flaky)], layer)
    layer.send("tasks.flaky", {"n": 7})
    with caplog.at_level(logging.WARNING, logger="worker"):
        assert worker.run_once(block=False)
        assert worker.run_once(block=False) is False  # in flight: invisible
        layer.clock.advance(ACK_TIMEOUT)
        assert worker.run_once(block=False)
        layer.clock.advance(ACK_TIMEOUT)
        assert worker.run_once(block=False)
    layer.clock.advance(ACK_TIMEOUT)
    assert worker.run_once(block=False) is False
    assert attempts == [7, 7, 7]
    assert drain(layer, "tasks.done") == [{"attempt": 3}]
    redelivery = [r.getMessage() for r in caplog.records if "not acknowledged" in r.getMessage()]
    assert len(redelivery) == 2 and "delivery 1" in redelivery[0]


def test_poison_message_is_given_up_after_max_retries(caplog):
    """A message whose consumer always raises is acknowledged (and logged as given up)
    after ``max_retries`` + 1 deliveries."""
    layer = acks_layer(expiry=1000)
    calls = []

    def poison(message):
        calls.append(1)
        raise ValueError("bad task")

    worker = make_worker([route("tasks.poison", poison)], layer, max_retries=2)
    layer.send("tasks.poison", {})
    with caplog.at_level(logging.ERROR, logger="worker"):
        for _ in range(5):
            worker.run_once(block=False)
            layer.clock.advance(ACK_TIMEOUT)
    assert len(calls) == 3
    assert "gave up on a message on 'tasks.poison'" in caplog.text


def test_consume_later_acknowledges_the_original():
    """``ConsumeLater`` requeues a copy; the original delivery is acknowledged."""
    layer = acks_layer()
    seen = []

    def later(message):
        seen.append(message.retries)
        if message.retries == 0:
            raise ConsumeLater()

    worker = make_worker([route("tasks.later", later)], layer)
    layer.send("tasks.later", {})
    while worker.run_once(block=False):
        pass
    layer.clock.advance(ACK_TIMEOUT)
    assert worker.run_once(block=False) is False
    assert seen == [0, 1]


def test_late_ack_is_logged(caplog):
    """An ack refused by the layer (the timeout passed during the consumer) is logged."""
    layer = acks_layer()

    def slow(message):
        layer.clock.advance(ACK_TIMEOUT)

    worker = make_worker([route("tasks.slow", slow)], layer)
    layer.send("tasks.slow", {})
    with caplog.at_level(logging.WARNING, logger="worker"):
        worker.run_once(block=False)
    assert "acknowledged too late" in caplog.text


def test_plain_channels_use_plain_receive():
    """With no at-least-once channel among its channels, the worker uses ``receive``."""
    layer = acks_layer()
    calls = []
    real_receive = layer.receive

    def receive(channels, block=False):
        calls.append(channels)
        return real_receive(channels, block=block)

    layer.receive = receive  # type: ignore[method-assign]
    worker = make_worker([route("plain", lambda m: None)], layer)
    layer.send("plain", {})
    assert worker.run_once(block=False)
    assert calls == [["plain"]]


def test_mixed_channels_ack_only_at_least_once_messages():
    """A worker on plain and at-least-once channels acks only the receipts it got."""
    layer = acks_layer()
    acked = []
    real_ack = layer.ack
    layer.ack = lambda receipt: acked.append(receipt) or real_ack(receipt)  # type: ignore
    worker = make_worker([route("plain", lambda m: None), route("tasks.a", lambda m: None)],
                         layer)
    layer.send("plain", {})
    layer.send("tasks.a", {})
    assert worker.run_once(block=False) and worker.run_once(block=False)
    assert [receipt.split("@")[0] for receipt in acked] == ["tasks.a"]


def test_ack_failure_is_logged_not_raised(caplog):
    """A layer error on ack is logged; the worker goes on."""
    layer = acks_layer()

    def broken_ack(receipt):
        raise ConnectionError("layer down")

    layer.ack = broken_ack  # type: ignore[method-assign]
    worker = make_worker([route("tasks.a", lambda m: None)], layer)
    layer.send("tasks.a", {})
    with caplog.at_level(logging.ERROR, logger="worker"):
        assert worker.run_once(block=False)
    assert "could not acknowledge a message on 'tasks.a'" in caplog.text
