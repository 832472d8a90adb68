"""Priority 5: the test tools users get, ``worker.django.testing``."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User

from asgi_spec.layers.memory import MemoryChannelLayer
from worker.channels import Group
from worker.django import get_channel_layer
from worker.django.testing import (
    ChannelTestCase,
    Client,
    TransactionChannelTestCase,
    WSClient,
    apply_routes,
)
from worker.exceptions import DenyConnection
from worker.routing import route


def remember(message):
    message.reply_channel.send({"text": message["text"]})


class TestChannelTestCase(ChannelTestCase):
    """ChannelTestCase gives each test fresh in-memory layers with the project's routing."""

    def test_a_leaves_a_message_behind(self):
        """A message sent during one test ..."""
        layer = get_channel_layer()
        assert isinstance(layer.layer, MemoryChannelLayer)
        assert "websocket.connect" in layer.router.channels
        layer.send("leftover", {"n": 1})
        assert self.get_next_message("leftover", require=True)["n"] == 1
        layer.send("leftover", {"n": 2})

    def test_b_starts_with_an_empty_layer(self):
        """... is not there in the next test (a new layer per test)."""
        assert self.get_next_message("leftover") is None
        with pytest.raises(AssertionError, match="expected a message"):
            self.get_next_message("leftover", require=True)

    def test_consumers_use_the_test_transaction(self):
        """Consumers run inside the test's transaction: rows the test made are visible to
        them, and running them does not close the test's database connection."""
        alice = User.objects.create_user("alice", password="pw")
        client = WSClient()
        client.force_login(alice)
        client.connect("/ws/auth/")
        client.cookies.clear()
        client.send(text="who")
        assert client.receive() == {"text": "alice"}
        assert User.objects.filter(username="alice").exists()


def test_client_send_consume_receive():
    """Client.send queues a message, consume runs its routed consumer, receive reads the
    reply sent to the client's reply channel."""
    with apply_routes([route("test.remember", remember)]):
        client = Client()
        client.send("test.remember", {"reply_channel": client.reply_channel, "text": "hi"})
        client.consume("test.remember")
        assert client.receive() == {"text": "hi"}
        assert client.receive() is None


def test_consume_fails_loudly_when_nothing_or_no_route():
    """consume fails the test when nothing waits or no route matches (unless told not to)."""
    client = Client()
    with pytest.raises(AssertionError, match="no message waiting"):
        client.consume("test.nothing")
    assert client.consume("test.nothing", fail_on_none=False) is None
    client.send("websocket.connect", {"reply_channel": client.reply_channel,
                                      "path": "/unrouted/", "query_string": b"",
                                      "headers": [], "order": 0})
    with pytest.raises(AssertionError, match="no route matches"):
        client.consume("websocket.connect")


def test_consumer_errors_reach_the_test():
    """An exception in a consumer propagates out of consume, and its sends are dropped."""

    def broken(message):
        message.reply_channel.send({"text": "never"})
        raise KeyError("broken")

    with apply_routes([route("test.broken", broken)]):
        client = Client()
        with pytest.raises(KeyError):
            client.send_and_consume("test.broken")
        assert client.receive() is None


def test_async_consumers_run_too():
    """An async def consumer is awaited; its sends are flushed like a sync consumer's."""

    async def hello(message):
        message.reply_channel.send({"text": "async"})

    with apply_routes([route("test.async", hello)]):
        client = Client()
        client.send_and_consume("test.async")
        assert client.receive() == {"text": "async"}


def test_apply_routes_restores_the_routing():
    """apply_routes swaps the routing inside the block only."""
    before = get_channel_layer().router
    with apply_routes([route("test.remember", remember)]):
        assert "test.remember" in get_channel_layer().router.channels
    assert get_channel_layer().router is before


@apply_routes([route("test.remember", remember)])
def test_apply_routes_as_a_function_decorator():
    """apply_routes decorates a test function."""
    assert "test.remember" in get_channel_layer().router.channels


@apply_routes([route("test.remember", remember)])
class TestApplyRoutesOnAClass:
    """apply_routes decorates every test method of a class."""

    def test_method(self):
        """The routing is applied inside each test method."""
        assert "test.remember" in get_channel_layer().router.channels


def test_wsclient_connect_checks_the_accept():
    """WSClient.connect fails the test when the consumer rejects the connection (here with
    DenyConnection, which becomes a close)."""

    def deny(message):
        raise DenyConnection()

    with apply_routes([route("websocket.connect", deny)]):
        client = WSClient()
        with pytest.raises(AssertionError, match="not accepted"):
            client.connect("/ws/")
        assert WSClient().connect("/ws/", check_accept=False) == {"close": True}


def test_wsclient_frames_orders_json_and_groups():
    """WSClient numbers its frames from order 1, sends JSON, and join_group makes it a member
    that receives group sends."""
    seen = []

    def receive(message):
        seen.append((message["order"], message["text"]))

    def accept(message):
        message.reply_channel.send({"accept": True})

    with apply_routes([route("websocket.connect", accept),
                       route("websocket.receive", receive)]):
        client = WSClient()
        client.connect("/ws/")
        client.send(text="a")
        client.send(json={"b": 2})
        assert seen == [(1, "a"), (2, '{"b": 2}')]
        client.join_group("room")
        Group("room", get_channel_layer()).send({"text": "to all"})
        assert client.receive() == {"text": "to all"}


class TestTransactionChannelTestCase(TransactionChannelTestCase):
    """TransactionChannelTestCase (whose _pre_setup Django 5.2 runs from setUpClass) gives
    each test the in-memory layers, and the test's rows are committed."""

    def test_memory_layer_and_committed_rows(self):
        """The layer is in-memory and routed; a row made here is committed (no test
        transaction around it)."""
        from django.db import connection

        assert isinstance(get_channel_layer().layer, MemoryChannelLayer)
        User.objects.create_user("committed")
        assert not connection.in_atomic_block
