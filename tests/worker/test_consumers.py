"""Tests for ``worker.consumers``, driven through a Worker's run_once over the memory layer."""

from __future__ import annotations

import json
import logging

import pytest

from asgi_spec.exceptions import MessageFormatError
from tests.worker.helpers import (
    SleepRecorder,
    drain,
    http_request,
    memory_layer,
    ws_connect,
    ws_disconnect,
    ws_receive,
)
from worker.consumers import (
    BaseConsumer,
    HttpConsumer,
    JsonWebsocketConsumer,
    WebsocketConsumer,
    WebsocketDemultiplexer,
    WebsocketMultiplexer,
)
from worker.routing import route
from worker.worker import Worker


def run(routing, *messages, debug=False):
    """Send ``(channel, content)`` messages, run them all; return the worker's layer."""
    layer = memory_layer()
    worker = Worker(layer, routing, debug=debug, sleep=SleepRecorder())
    for channel, content in messages:
        layer.send(channel, content)
        assert worker.run_once(block=False)
    return layer


def texts(replies):
    return [json.loads(r["text"]) for r in replies]


# -- BaseConsumer --------------------------------------------------------------


def test_base_consumer_one_instance_per_message_with_route_kwargs():
    """Each message gets a fresh instance; filter groups arrive as handler kwargs."""
    seen = []

    class Jobs(BaseConsumer):
        method_mapping = {"jobs": "handle"}

        def handle(self, message, **kwargs):
            seen.append((id(self), kwargs, message["kind"]))
            self.count = getattr(self, "count", 0) + 1

    run([Jobs.as_route(kind=r"(?P<k>\w+)")], ("jobs", {"kind": "a"}), ("jobs", {"kind": "b"}))
    assert [(kw, kind) for _, kw, kind in seen] == [({"k": "a"}, "a"), ({"k": "b"}, "b")]
    assert Jobs.channel_names() == {"jobs"}


def test_as_route_attrs_make_a_configured_subclass():
    """as_route(attrs) routes a subclass with those attributes, leaving the base alone."""
    class Echo(WebsocketConsumer):
        groups = ()

    entry = Echo.as_route({"groups": ["g1"]})
    assert list(entry.consumer.groups) == ["g1"] and Echo.groups == ()
    layer = run([entry], ("websocket.connect", ws_connect()))
    assert layer.group_channels("g1") == ["srv!ws1"]


def test_async_method_in_class_consumer_is_a_clear_error(caplog):
    """A class consumer with an async handler fails with an error saying to use a function."""
    class Bad(BaseConsumer):
        method_mapping = {"jobs": "handle"}

        async def handle(self, message, **kwargs):
            pass

    with caplog.at_level(logging.ERROR, logger="worker"):
        run([Bad.as_route()], ("jobs", {}))
    assert "class consumer methods must be sync" in caplog.text


# -- WebsocketConsumer ---------------------------------------------------------


class Chat(WebsocketConsumer):
    def connection_groups(self, room=None, **kwargs):
        return [f"room-{room}"]

    def receive(self, text=None, bytes=None, **kwargs):
        if text == "close":
            self.close(4001)
        elif text is not None:
            self.send(text=text.upper())
            self.group_send(f"room-{kwargs['room']}", text=f"all:{text}")
        else:
            self.send(bytes=bytes[::-1])


CHAT = [Chat.as_route(path=r"^/chat/(?P<room>\w+)/$")]


def test_websocket_connect_accepts_and_joins_groups_disconnect_leaves():
    """connect accepts by default and joins connection_groups; disconnect leaves them."""
    layer = run(CHAT, ("websocket.connect", ws_connect("/chat/x/")))
    assert drain(layer, "srv!") == [{"accept": True}]
    assert layer.group_channels("room-x") == ["srv!ws1"]
    worker = Worker(layer, CHAT)
    layer.send("websocket.disconnect", ws_disconnect("/chat/x/"))
    worker.run_once(block=False)
    assert layer.group_channels("room-x") == []


def test_websocket_receive_text_bytes_send_group_send_and_close():
    """receive gets text or bytes; send, group_send and close produce valid replies."""
    layer = run(CHAT,
                ("websocket.connect", ws_connect("/chat/x/")),
                ("websocket.receive", ws_receive("/chat/x/", text="hi")),
                ("websocket.receive", ws_receive("/chat/x/", bytes=b"abc", order=2)),
                ("websocket.receive", ws_receive("/chat/x/", text="close", order=3)))
    assert drain(layer, "srv!") == [
        {"accept": True}, {"text": "HI"}, {"text": "all:hi"}, {"bytes": b"cba"}, {"close": 4001},
    ]


def test_websocket_send_checks_its_arguments():
    """send() refuses text and bytes together, nothing at all, and invalid close codes."""
    class Bad(WebsocketConsumer):
        def receive(self, text=None, bytes=None, **kwargs):
            with pytest.raises(ValueError, match="not both"):
                self.send(text="a", bytes=b"b")
            with pytest.raises(ValueError, match="needs text, bytes or close"):
                self.send()
            with pytest.raises(MessageFormatError, match="'close'"):
                self.close(1005)
            self.send(text="ok")

    layer = run([Bad.as_route()], ("websocket.receive", ws_receive(text="x")))
    assert drain(layer, "srv!") == [{"text": "ok"}]


# -- JsonWebsocketConsumer -----------------------------------------------------


class JsonEcho(JsonWebsocketConsumer):
    def receive(self, content=None, **kwargs):
        self.send({"echo": content})


def test_json_consumer_decodes_and_encodes():
    """JsonWebsocketConsumer receives decoded JSON and sends JSON text."""
    layer = run([JsonEcho.as_route()],
                ("websocket.receive", ws_receive(text='{"a": [1, 2]}')))
    assert texts(drain(layer, "srv!")) == [{"echo": {"a": [1, 2]}}]


def test_json_consumer_group_send_outside_a_consumer():
    """group_send with layer= works from plain code, e.g. a background script."""
    layer = memory_layer()
    layer.group_add("news", "srv!a")
    JsonEcho.group_send("news", {"n": 1}, layer=layer)
    assert texts(drain(layer, "srv!")) == [{"n": 1}]


@pytest.mark.parametrize("frame", [{"bytes": b"\x00"}, {"text": "{not json"}])
def test_json_consumer_bad_frame_is_logged_and_closes_in_debug(frame, caplog):
    """A binary or non-JSON frame is a consumer error; in debug mode the socket gets 1011."""
    with caplog.at_level(logging.ERROR, logger="worker"):
        layer = run([JsonEcho.as_route()], ("websocket.receive", ws_receive(**frame)),
                    debug=True)
    assert drain(layer, "srv!") == [{"close": 1011}]
    assert "JsonEcho" in caplog.text


# -- WebsocketDemultiplexer ----------------------------------------------------


class Numbers(JsonWebsocketConsumer):
    groups = ["numbers"]

    def receive(self, content=None, **kwargs):
        self.send({"double": content["n"] * 2})


class Letters(JsonWebsocketConsumer):
    def connect(self, message, **kwargs):
        self.send({"hello": "letters"})

    def receive(self, content=None, **kwargs):
        self.send({"upper": content["s"].upper()})


class Demux(WebsocketDemultiplexer):
    consumers = {"numbers": Numbers, "letters": Letters}


def test_demultiplexer_accepts_once_and_fans_out_connect():
    """On connect the demultiplexer accepts once; each stream consumer connects (groups too)."""
    layer = run([Demux.as_route()], ("websocket.connect", ws_connect()))
    replies = drain(layer, "srv!")
    assert replies[0] == {"accept": True}
    assert texts(replies[1:]) == [{"stream": "letters", "payload": {"hello": "letters"}}]
    assert layer.group_channels("numbers") == ["srv!ws1"]


def test_demultiplexer_routes_frames_by_stream_and_wraps_replies():
    """A {"stream", "payload"} frame reaches that stream's consumer; replies carry the stream."""
    layer = run([Demux.as_route()],
                ("websocket.receive", ws_receive(text='{"stream":"numbers","payload":{"n":4}}')),
                ("websocket.receive", ws_receive(text='{"stream":"letters","payload":{"s":"a"}}',
                                                 order=2)))
    assert texts(drain(layer, "srv!")) == [
        {"stream": "numbers", "payload": {"double": 8}},
        {"stream": "letters", "payload": {"upper": "A"}},
    ]


def test_demultiplexer_disconnect_fans_out():
    """On disconnect every stream consumer leaves its groups."""
    layer = run([Demux.as_route()], ("websocket.connect", ws_connect()))
    Worker(layer, [Demux.as_route()]).handle("websocket.disconnect", ws_disconnect())
    assert layer.group_channels("numbers") == []


@pytest.mark.parametrize(("text", "words"), [
    ('{"stream":"nope","payload":{}}', "unknown stream 'nope'"),
    ('{"payload":{}}', "a multiplexed frame must be"),
    ('{"stream":"numbers","payload":[1]}', "must be a JSON object"),
])
def test_demultiplexer_bad_frames_are_clear_errors(text, words, caplog):
    """Frames without a known stream or a dict payload are logged with a clear reason."""
    with caplog.at_level(logging.ERROR, logger="worker"):
        run([Demux.as_route()], ("websocket.receive", ws_receive(text=text)))
    assert words in caplog.text


def test_multiplexer_group_send_and_demultiplexer_send_refused():
    """WebsocketMultiplexer.group_send wraps the payload; the demultiplexer cannot send itself."""
    layer = memory_layer()
    layer.group_add("g", "srv!a")
    WebsocketMultiplexer.group_send("g", "numbers", {"n": 1}, layer=layer)
    assert texts(drain(layer, "srv!")) == [{"stream": "numbers", "payload": {"n": 1}}]
    with pytest.raises(TypeError, match="does not send itself"):
        Demux.group_send("g", {})


# -- HttpConsumer --------------------------------------------------------------


class Page(HttpConsumer):
    def get(self, message, **kwargs):
        self.respond(200, {"content-type": "text/plain"}, "héllo")


class Stream(HttpConsumer):
    def get(self, message, **kwargs):
        self.respond(200, [(b"content-type", b"text/plain")], b"a", more_content=True)
        self.send_chunk(b"b", more_content=True)
        self.send_chunk(b"")


class LongPoll(HttpConsumer):
    groups = ["updates"]

    def get(self, message, **kwargs):
        """Wait: the answer comes from group_respond."""


def test_http_consumer_dispatches_by_method_and_encodes():
    """GET goes to get(); str headers and content are encoded."""
    layer = run([Page.as_route()], ("http.request", http_request()))
    assert drain(layer, "srv!") == [
        {"status": 200, "headers": [[b"content-type", b"text/plain"]],
         "content": "héllo".encode()},
    ]


def test_http_consumer_unknown_method_gets_405_with_allow():
    """A method without a handler is answered 405 with an Allow header."""
    layer = run([Page.as_route()], ("http.request", http_request(method="POST")))
    (reply,) = drain(layer, "srv!")
    assert reply["status"] == 405 and [b"allow", b"GET"] in reply["headers"]


def test_http_consumer_streams_response_then_chunks_in_order():
    """A streamed response is a Response with more_content then Chunks, the last closing it."""
    layer = run([Stream.as_route()], ("http.request", http_request()))
    assert drain(layer, "srv!") == [
        {"status": 200, "headers": [[b"content-type", b"text/plain"]], "content": b"a",
         "more_content": True},
        {"content": b"b", "more_content": True},
        {"content": b""},
    ]


def test_http_long_poll_waits_in_group_until_group_respond_and_disconnect_leaves():
    """A long-poll request gets no reply until group_respond, which also takes it out of the
    group (a finished request gets no http.disconnect); http.disconnect takes out one that
    is still waiting."""
    layer = run([LongPoll.as_route()], ("http.request", http_request(reply_channel="srv!p1")))
    assert drain(layer, "srv!") == []
    worker = Worker(layer, [LongPoll.as_route()])
    worker.handle("http.request", http_request(reply_channel="srv!p2", method="PUT"))
    assert drain(layer, "srv!")[0]["status"] == 405
    assert layer.group_channels("updates") == ["srv!p1"]  # a refused request does not wait
    LongPoll.group_respond("updates", content=b"news", layer=layer)
    assert drain(layer, "srv!") == [{"status": 200, "headers": [], "content": b"news"}]
    assert layer.group_channels("updates") == []
    LongPoll.group_respond("updates", content=b"later", layer=layer)
    assert drain(layer, "srv!") == []  # the answered request is not answered twice
    worker.handle("http.request", http_request(reply_channel="srv!p3"))
    worker.handle("http.disconnect", {"reply_channel": "srv!p3", "path": "/"})
    assert layer.group_channels("updates") == []


def test_group_respond_inside_a_consumer_is_atomic():
    """Inside a consumer, group_respond's answers and the members' leaving happen when it
    returns; if it raises instead, the requests still wait, unanswered."""
    outcome = {"raise": True}

    def publish(message):
        LongPoll.group_respond("updates", content=b"news")
        if outcome["raise"]:
            raise RuntimeError("after group_respond")

    routing = [route("publish", publish), LongPoll.as_route()]
    layer = run(routing, ("http.request", http_request(reply_channel="srv!p1")),
                ("publish", {}))
    assert drain(layer, "srv!") == []
    assert layer.group_channels("updates") == ["srv!p1"]
    outcome["raise"] = False
    Worker(layer, routing).handle("publish", {})
    assert drain(layer, "srv!") == [{"status": 200, "headers": [], "content": b"news"}]
    assert layer.group_channels("updates") == []
