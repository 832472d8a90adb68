"""Tests for ``worker.message``: the dict-like Message and its checked reply channel."""

from __future__ import annotations

import pytest

from asgi_spec.exceptions import MessageFormatError
from tests.worker.helpers import drain, http_request, memory_layer, ws_receive
from worker.message import Message


def test_message_is_dict_like_and_exposes_channel_layer_and_reply_channel():
    """Message reads like a dict and carries its channel, layer and reply channel."""
    layer = memory_layer()
    message = Message(http_request("/x"), "http.request", layer)
    assert message["path"] == "/x"
    assert message.get("missing", 5) == 5
    assert "method" in message and len(message) == 6
    assert message.channel.name == "http.request"
    assert message.layer is layer and message.channel_layer is layer
    assert message.reply_channel.name == "srv!conn1"
    message["path"] = "/y"
    assert message.content["path"] == "/y"


def test_copy_is_independent():
    """copy() gives a message whose content can change without touching the original."""
    message = Message(http_request(), "http.request", memory_layer())
    clone = message.copy()
    clone["path"] = "/changed"
    assert message["path"] == "/"
    assert clone.channel.name == "http.request"


def test_no_reply_channel_gives_none():
    """A message without reply_channel has reply_channel None."""
    assert Message({"x": 1}, "custom", memory_layer()).reply_channel is None


def test_http_reply_is_validated_naming_the_field():
    """A bad HTTP reply raises MessageFormatError naming the field, and nothing is sent."""
    layer = memory_layer()
    message = Message(http_request(), "http.request", layer)
    with pytest.raises(MessageFormatError, match="'body'"):
        message.reply_channel.send({"status": 200, "body": b"x"})
    with pytest.raises(MessageFormatError, match="'status'"):
        message.reply_channel.send({"status": "200"})
    message.reply_channel.send({"status": 200, "content": b"ok", "more_content": True})
    message.reply_channel.send({"content": b"more"})
    assert drain(layer, "srv!") == [{"status": 200, "content": b"ok", "more_content": True},
                                     {"content": b"more"}]


def test_websocket_reply_is_validated():
    """A reply to a websocket message is checked as a WebSocket send/close reply."""
    message = Message(ws_receive(text="hi"), "websocket.receive", memory_layer())
    with pytest.raises(MessageFormatError, match="'close'"):
        message.reply_channel.send({"close": 999})
    with pytest.raises(MessageFormatError, match="'bytes'"):
        message.reply_channel.send({"text": "a", "bytes": b"b"})


def test_retries_counts_requeues():
    """retries reads the __retries__ key (0 when absent)."""
    assert Message({}, "x", None).retries == 0
    assert Message({"__retries__": 3}, "x", None).retries == 3
