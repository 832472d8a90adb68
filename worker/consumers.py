"""Generic class consumers: WebSocket, JSON, a stream demultiplexer, and HTTP.

How this works: a class consumer is routed with ``Cls.as_route(**filters)``.
The worker calls ``Cls(message, **kwargs)`` for each message: the instance
lives for that one message only, and ``__init__`` dispatches to the method
that ``method_mapping`` names for the message's channel. Per-connection state
therefore cannot live on ``self``; keep it in the layer (groups) or a store.

Every reply goes through ``message.reply_channel``, which checks it against
``asgi_spec.formats`` before it is held, so a bad reply fails in the consumer
with an error naming the field. Group sends are checked here, against the
same formats, because a group's members are not known to be of one kind.

Handlers are synchronous; for ``async def`` use a function consumer.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

from asgi_spec import formats
from worker.channels import Channel, Group, _layer_for
from worker.message import Message
from worker.routing import RouteClass, route_class

__all__ = [
    "BaseConsumer",
    "HttpConsumer",
    "JsonWebsocketConsumer",
    "WebsocketConsumer",
    "WebsocketDemultiplexer",
    "WebsocketMultiplexer",
]


class BaseConsumer:
    """One instance per message; ``method_mapping`` maps channel names to method names."""

    method_mapping: ClassVar[dict[str, str]] = {}

    def __init__(self, message: Message, **kwargs: Any) -> None:
        self.message = message
        self.kwargs = kwargs
        self.dispatch(message, **kwargs)

    @classmethod
    def channel_names(cls) -> set[str]:
        """The channels this consumer handles (what ``route_class`` routes)."""
        return set(cls.method_mapping)

    @classmethod
    def as_route(cls, attrs: Mapping[str, Any] | None = None, **filters: Any) -> RouteClass:
        """A route to this class; ``attrs`` makes a subclass with those attributes first."""
        target = type(cls.__name__, (cls,), dict(attrs)) if attrs else cls
        return route_class(target, **filters)

    def get_handler(self, message: Message) -> Any:
        name = self.method_mapping.get(message.channel.name)
        if name is None:
            raise ValueError(f"{type(self).__name__} has no method for channel "
                             f"{message.channel.name!r} (method_mapping: {self.method_mapping})")
        return getattr(self, name)

    def dispatch(self, message: Message, **kwargs: Any) -> None:
        result = self.get_handler(message)(message, **kwargs)
        if inspect.isawaitable(result):
            close = getattr(result, "close", None)
            if close is not None:
                close()  # no "never awaited" warning on top of the error
            raise TypeError(f"{type(self).__name__}: class consumer methods must be sync; "
                            "route an async def function instead")


def _frame(text: str | None, bytes: bytes | None, close: bool | int) -> dict[str, Any]:
    if text is not None and bytes is not None:
        raise ValueError("send() takes text or bytes, not both")
    frame: dict[str, Any] = {}
    if text is not None:
        frame["text"] = text
    elif bytes is not None:
        frame["bytes"] = bytes
    if close:
        frame["close"] = close
    if not frame:
        raise ValueError("send() needs text, bytes or close")
    return frame


class WebsocketConsumer(BaseConsumer):
    """``connect`` (accepts by default), ``receive(text=, bytes=)``, ``disconnect``.

    ``groups`` (or ``connection_groups(**kwargs)``) are joined on connect and
    left on disconnect. Under a ``WebsocketDemultiplexer`` the consumer gets
    ``self.multiplexer`` and the demultiplexer accepts the socket.
    """

    method_mapping: ClassVar[dict[str, str]] = {
        formats.WEBSOCKET_CONNECT: "raw_connect",
        formats.WEBSOCKET_RECEIVE: "raw_receive",
        formats.WEBSOCKET_DISCONNECT: "raw_disconnect",
    }
    groups: ClassVar[Iterable[str]] = ()

    def __init__(self, message: Message, multiplexer: WebsocketMultiplexer | None = None,
                 **kwargs: Any) -> None:
        self.multiplexer = multiplexer
        super().__init__(message, **kwargs)

    def connection_groups(self, **kwargs: Any) -> list[str]:
        """The groups this connection belongs to; override to depend on the route kwargs."""
        return list(self.groups)

    def raw_connect(self, message: Message, **kwargs: Any) -> None:
        for group in self.connection_groups(**kwargs):
            Group(group, message.layer).add(message.reply_channel)
        self.connect(message, **kwargs)

    def raw_receive(self, message: Message, **kwargs: Any) -> None:
        text = message.get("text")
        if text is not None:
            self.receive(text=text, **kwargs)
        else:
            self.receive(bytes=message.get("bytes"), **kwargs)

    def raw_disconnect(self, message: Message, **kwargs: Any) -> None:
        for group in self.connection_groups(**kwargs):
            Group(group, message.layer).discard(message.reply_channel)
        self.disconnect(message, **kwargs)

    def connect(self, message: Message, **kwargs: Any) -> None:
        """Called on ``websocket.connect``; accepts. Call ``self.close()`` to reject."""
        self.accept()

    def receive(self, text: str | None = None, bytes: bytes | None = None,
                **kwargs: Any) -> None:
        """Called with each frame's ``text`` or ``bytes``."""

    def disconnect(self, message: Message, **kwargs: Any) -> None:
        """Called on ``websocket.disconnect``, after the groups were left."""

    def accept(self) -> None:
        if self.multiplexer is None:
            self.message.reply_channel.send({"accept": True})

    def send(self, text: str | None = None, bytes: bytes | None = None,
             close: bool | int = False) -> None:
        """Send a frame to this socket; ``close`` (True or a code) closes it after."""
        if self.multiplexer is not None:
            raise TypeError(f"{type(self).__name__} is demultiplexed: subclass "
                            "JsonWebsocketConsumer and send dicts")
        self.message.reply_channel.send(_frame(text, bytes, close))

    def close(self, code: bool | int = True) -> None:
        """Close the socket (``True`` is 1000); while handshaking, reject it (403)."""
        self.message.reply_channel.send({"close": code})

    @classmethod
    def group_send(cls, name: str, text: str | None = None, bytes: bytes | None = None,
                   close: bool | int = False, *, layer: Any = None) -> None:
        """Send a frame to every socket in group ``name`` (``layer`` outside a consumer)."""
        Group(name, layer).send(formats.validate_websocket_reply(_frame(text, bytes, close)))


class JsonWebsocketConsumer(WebsocketConsumer):
    """A WebSocket consumer whose frames are JSON text: ``receive(content)``, ``send(content)``."""

    def raw_receive(self, message: Message, **kwargs: Any) -> None:
        text = message.get("text")
        if text is None:
            raise ValueError(f"{type(self).__name__} got a binary frame; it expects JSON text")
        self.receive(self.decode_json(text), **kwargs)

    def receive(self, content: Any = None, **kwargs: Any) -> None:  # type: ignore[override]
        """Called with each frame's decoded JSON."""

    def send(self, content: Any, close: bool | int = False) -> None:  # type: ignore[override]
        """Send ``content`` as JSON (wrapped in its stream frame when demultiplexed)."""
        if self.multiplexer is not None:
            self.multiplexer.send(content)
            if close:
                self.close(close)
        else:
            super().send(text=self.encode_json(content), close=close)

    @classmethod
    def group_send(cls, name: str, content: Any,  # type: ignore[override]
                   close: bool | int = False, *, layer: Any = None) -> None:
        super().group_send(name, text=cls.encode_json(content), close=close, layer=layer)

    @classmethod
    def encode_json(cls, content: Any) -> str:
        return json.dumps(content, separators=(",", ":"))

    @classmethod
    def decode_json(cls, text: str) -> Any:
        return json.loads(text)


class WebsocketMultiplexer:
    """Sends ``{"stream": stream, "payload": payload}`` frames over one socket."""

    def __init__(self, stream: str, reply_channel: Any) -> None:
        self.stream = stream
        self.reply_channel = reply_channel

    @staticmethod
    def encode(stream: str, payload: Any) -> dict[str, Any]:
        return {"text": JsonWebsocketConsumer.encode_json({"stream": stream, "payload": payload})}

    def send(self, payload: Any) -> None:
        self.reply_channel.send(self.encode(self.stream, payload))

    @classmethod
    def group_send(cls, name: str, stream: str, payload: Any, *, layer: Any = None) -> None:
        """Send a stream frame to every socket in group ``name``."""
        Group(name, layer).send(cls.encode(stream, payload))


class WebsocketDemultiplexer(JsonWebsocketConsumer):
    """Routes ``{"stream", "payload"}`` frames to ``consumers[stream]``.

    Connect and disconnect reach every stream's consumer; each gets
    ``self.multiplexer`` to answer on its own stream. The demultiplexer
    accepts the socket itself.
    """

    consumers: ClassVar[dict[str, type[JsonWebsocketConsumer]]] = {}

    def _run(self, cls: type[JsonWebsocketConsumer], stream: str, message: Message,
             **kwargs: Any) -> None:
        if not (isinstance(cls, type) and issubclass(cls, JsonWebsocketConsumer)):
            raise TypeError(f"{type(self).__name__}.consumers[{stream!r}] must be a "
                            f"JsonWebsocketConsumer subclass, got {cls!r}")
        cls(message, multiplexer=WebsocketMultiplexer(stream, message.reply_channel), **kwargs)

    def connect(self, message: Message, **kwargs: Any) -> None:
        self.accept()
        for stream, cls in self.consumers.items():
            self._run(cls, stream, message, **kwargs)

    def receive(self, content: Any = None, **kwargs: Any) -> None:
        if not isinstance(content, dict) or "stream" not in content or "payload" not in content:
            raise ValueError("a multiplexed frame must be {\"stream\": ..., \"payload\": {...}}, "
                             f"got {str(content)[:80]}")
        stream, payload = content["stream"], content["payload"]
        cls = self.consumers.get(stream) if isinstance(stream, str) else None
        if cls is None:
            raise ValueError(f"unknown stream {stream!r}; known: {sorted(self.consumers)}")
        if not isinstance(payload, dict):
            raise ValueError(f"the payload of stream {stream!r} must be a JSON object")
        inner = Message({**self.message.content, "text": self.encode_json(payload)},
                        self.message.channel.name, self.message.layer)
        for name, value in vars(self.message).items():  # what decorators set: user, sessions
            vars(inner).setdefault(name, value)
        self._run(cls, stream, inner, **kwargs)

    def disconnect(self, message: Message, **kwargs: Any) -> None:
        for stream, cls in self.consumers.items():
            self._run(cls, stream, message, **kwargs)

    def send(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("a demultiplexer does not send itself: use a stream's "
                        "WebsocketMultiplexer(stream, reply_channel).send(payload)")

    @classmethod
    def group_send(cls, *args: Any, **kwargs: Any) -> None:
        raise TypeError("a demultiplexer does not send itself: use "
                        "WebsocketMultiplexer.group_send(group, stream, payload)")


def _headers(headers: Mapping[Any, Any] | Iterable[Any]) -> list[list[bytes]]:
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    return [[k.encode("latin-1") if isinstance(k, str) else k,
             v.encode("latin-1") if isinstance(v, str) else v] for k, v in pairs]


def _body(content: bytes | str) -> bytes:
    return content.encode("utf-8") if isinstance(content, str) else content


def http_response(status: int = 200, headers: Mapping[Any, Any] | Iterable[Any] = (),
                  content: bytes | str = b"", more_content: bool = False) -> dict[str, Any]:
    """An HTTP Response reply (str headers and content are encoded), validated."""
    reply = {"status": status, "headers": _headers(headers), "content": _body(content)}
    if more_content:
        reply["more_content"] = True
    return formats.validate_http_response(reply)


class HttpConsumer(BaseConsumer):
    """An HTTP consumer for long-polling and streaming responses.

    ``http.request`` is dispatched to ``get``/``post``/... by method (405
    otherwise). Reply with ``respond(...)`` and, for a streamed body,
    ``respond(..., more_content=True)`` followed by ``send_chunk(...)``, the
    last with ``more_content=False``; pass ``immediately=True`` to send each
    part as soon as it is made. For long-polling, list ``groups``: the
    request's reply channel waits in them without an answer, until someone
    calls ``group_respond(group, ...)``, which also takes the answered ones
    out; ``http.disconnect`` (the client gave up) takes a waiting one out.
    """

    method_mapping: ClassVar[dict[str, str]] = {
        formats.HTTP_REQUEST: "raw_request",
        formats.HTTP_DISCONNECT: "raw_disconnect",
    }
    groups: ClassVar[Iterable[str]] = ()
    http_methods: ClassVar[tuple[str, ...]] = (
        "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")

    def connection_groups(self, **kwargs: Any) -> list[str]:
        return list(self.groups)

    def raw_request(self, message: Message, **kwargs: Any) -> None:
        method = message.get("method", "")
        handler = getattr(self, method.lower(), None) if method in self.http_methods else None
        if handler is None:
            allowed = [m for m in self.http_methods if hasattr(self, m.lower())]
            self.respond(405, {"allow": ", ".join(allowed), "content-type": "text/plain"},
                         b"Method Not Allowed")
            return
        for group in self.connection_groups(**kwargs):
            Group(group, message.layer).add(message.reply_channel)
        handler(message, **kwargs)

    def raw_disconnect(self, message: Message, **kwargs: Any) -> None:
        for group in self.connection_groups(**kwargs):
            Group(group, message.layer).discard(message.reply_channel)
        self.disconnect(message, **kwargs)

    def disconnect(self, message: Message, **kwargs: Any) -> None:
        """Called on ``http.disconnect``, after the groups were left."""

    def respond(self, status: int = 200, headers: Mapping[Any, Any] | Iterable[Any] = (),
                content: bytes | str = b"", more_content: bool = False,
                immediately: bool = False) -> None:
        """Start (or, without ``more_content``, complete) the response."""
        self.message.reply_channel.send(
            http_response(status, headers, content, more_content), immediately=immediately)

    def send_chunk(self, content: bytes | str, more_content: bool = False,
                   immediately: bool = False) -> None:
        """Send the next part of the body; ``more_content=False`` ends the response."""
        chunk: dict[str, Any] = {"content": _body(content)}
        if more_content:
            chunk["more_content"] = True
        self.message.reply_channel.send(chunk, immediately=immediately)

    @classmethod
    def group_respond(cls, group: str, status: int = 200,
                      headers: Mapping[Any, Any] | Iterable[Any] = (),
                      content: bytes | str = b"", *, layer: Any = None) -> None:
        """Answer every request waiting in ``group`` (long-poll wake-up); they leave it.

        An answered request gets no ``http.disconnect`` (the server sends one only
        for a request the client abandons), so each answered reply channel is
        taken out of the group here, or every later wake-up would go to it too
        and the group would grow forever. Each member gets its own answer and
        leaves the group when the consumer's sends are flushed; a request that
        joins meanwhile waits for the next wake-up.
        """
        target = Group(group, layer)
        the_layer = target.layer if target.layer is not None else _layer_for(None, repr(target))
        response = http_response(status, headers, content)
        for channel in the_layer.group_channels(target.name):
            Channel(channel, the_layer, validator=formats.validate_http_response).send(response)
            target.discard(channel, immediately=False)
