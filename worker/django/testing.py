"""Test tools: ``ChannelTestCase``, ``Client``/``WSClient``, ``apply_routes`` and
``ChannelLiveServerTestCase``.

How this works: ``ChannelTestCase`` (and ``TransactionChannelTestCase``)
give every test fresh in-memory layers for all aliases of ``CHANNEL_LAYERS``,
with the same routing (``TEST_CONFIG`` gives their options), through
``worker.django.layers.swap_layers``; ``get_channel_layer()`` returns them
during the test. ``memory_layers()`` does the same as a context manager for
other test styles (pytest).

A ``Client`` plays both other ends of the layer: it sends messages as an
interface server would, with its own reply channel, and ``consume`` runs the
routed consumer at once in the calling thread (sends held and flushed as in a
worker; consumer exceptions propagate to the test). ``receive`` reads what
the consumer replied. ``Client.get/post/request`` do the whole HTTP exchange
through the routing (Django views by default) and assemble the replies into a
``BridgeResponse``. ``WSClient`` keeps a WebSocket's reply channel, ``order``,
cookies and headers: ``connect``, ``send``, ``receive``, ``close``, ``login``
and ``force_login`` (through Django's test client, whose session cookie it
then sends).

``apply_routes(routes)`` swaps an alias's routing for a block, a test
function or every test method of a class.

``ChannelLiveServerTestCase`` (a ``TransactionTestCase``) runs real
processes for the whole class -- ``interfaceserver`` and ``manage.py
runworker`` (``worker_processes`` of them) on a temporary SQLite layer, or
``channel_layer_url`` -- over the test database, which must therefore be a
file when it is SQLite (``DATABASES[...]["TEST"]["NAME"]``); see
``worker.django.live``. Tests reach them at ``live_server_url`` and
``live_server_ws_url``; the test process's ``get_channel_layer()`` is the
processes' layer, so model bindings and group sends made in a test reach the
live sockets.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json as jsonlib
from collections.abc import Iterator
from contextlib import ContextDecorator, contextmanager
from http.cookies import SimpleCookie
from typing import Any

from django.core import signals as django_signals
from django.db import close_old_connections
from django.test import TestCase, TransactionTestCase
from django.test import client as django_client
from django.utils.functional import classproperty

from asgi_spec import formats, names
from asgi_spec.layers.memory import MemoryChannelLayer
from worker.django import signals
from worker.django.layers import (
    ChannelLayerWrapper,
    InvalidChannelLayerError,
    configured_aliases,
    get_channel_layer,
    layer_settings,
    swap_layers,
)
from worker.django.routing import DjangoRouter
from worker.exceptions import ConsumeLater, DenyConnection
from worker.message import Message
from worker.outbox import Outbox

__all__ = [
    "BridgeResponse",
    "ChannelLiveServerTestCase",
    "ChannelTestCase",
    "Client",
    "TransactionChannelTestCase",
    "WSClient",
    "apply_routes",
    "memory_layers",
]

_RECYCLING_SIGNALS = (django_signals.request_started, django_signals.request_finished,
                      signals.consumer_started, signals.consumer_finished)


def _memory_wrappers() -> dict[str, ChannelLayerWrapper]:
    wrappers = {}
    for alias in configured_aliases():
        try:
            found = layer_settings(alias)
            config = _test_config(alias)
        except InvalidChannelLayerError:
            continue
        wrappers[alias] = ChannelLayerWrapper(MemoryChannelLayer(**config), alias, found.routing)
    return wrappers


def _test_config(alias: str) -> dict[str, Any]:
    from django.conf import settings

    layers = getattr(settings, "CHANNEL_LAYERS", None) or {}
    return dict((layers.get(alias) or {}).get("TEST_CONFIG") or {})


@contextmanager
def memory_layers() -> Iterator[None]:
    """Fresh in-memory layers for every configured alias, with the same routing."""
    with swap_layers(_memory_wrappers()):
        yield


@contextmanager
def _no_connection_recycling() -> Iterator[None]:
    """Keep the test's database connection (and its transaction) open while consuming."""
    for signal in _RECYCLING_SIGNALS:
        signal.disconnect(close_old_connections)
        signal.disconnect(dispatch_uid="switchboard_close_old_started")
        signal.disconnect(dispatch_uid="switchboard_close_old_finished")
    try:
        yield
    finally:
        django_signals.request_started.connect(close_old_connections)
        django_signals.request_finished.connect(close_old_connections)
        signals.consumer_started.connect(close_old_connections,
                                         dispatch_uid="switchboard_close_old_started")
        signals.consumer_finished.connect(close_old_connections,
                                          dispatch_uid="switchboard_close_old_finished")


class ChannelTestMixin:
    """Swaps in in-memory layers around each test (its setUp, body and tearDown)."""

    def run(self, result: Any = None) -> Any:
        with memory_layers():
            return super().run(result)  # type: ignore[misc]

    def get_next_message(self, channel: str, require: bool = False,
                         alias: str = "default") -> Message | None:
        """The next message on ``channel`` (``None``, or a failure with ``require``)."""
        layer = get_channel_layer(alias)
        name, content = layer.receive([channel])
        if name is None:
            if require:
                raise AssertionError(f"expected a message on {channel!r}, none was waiting")
            return None
        return Message(content, name, layer.layer)


class ChannelTestCase(ChannelTestMixin, TestCase):
    """A Django ``TestCase`` whose channel layers are fresh in-memory layers."""


class TransactionChannelTestCase(ChannelTestMixin, TransactionTestCase):
    """A ``TransactionTestCase`` whose channel layers are fresh in-memory layers."""


class BridgeResponse:
    """An HTTP response assembled from the replies of an ``http.request``."""

    def __init__(self, replies: list[dict[str, Any]]) -> None:
        if not replies or "status" not in replies[0]:
            raise AssertionError(f"no HTTP response in the replies: {replies!r}")
        self.replies = replies
        self.status_code: int = replies[0]["status"]
        self.header_list = [(n.decode("latin-1"), v.decode("latin-1"))
                            for n, v in replies[0].get("headers", [])]
        self.content = b"".join(r.get("content", b"") for r in replies)
        self.cookies: SimpleCookie = SimpleCookie()
        for name, value in self.header_list:
            if name.lower() == "set-cookie":
                self.cookies.load(value)

    @property
    def headers(self) -> dict[str, str]:
        """Headers other than ``Set-Cookie``, by lower-case name."""
        return {n.lower(): v for n, v in self.header_list if n.lower() != "set-cookie"}

    def json(self) -> Any:
        return jsonlib.loads(self.content)

    def __repr__(self) -> str:
        return f"<BridgeResponse {self.status_code} {len(self.content)} bytes>"


def _split_path(path: str) -> tuple[str, bytes]:
    path, _, query = path.partition("?")
    return path, query.encode("latin-1")


def _header_list(headers: Any) -> list[list[bytes]]:
    pairs = headers.items() if isinstance(headers, dict) else headers or ()
    return [[n.lower().encode("latin-1") if isinstance(n, str) else n.lower(),
             v.encode("latin-1") if isinstance(v, str) else v] for n, v in pairs]


class Client:
    """Sends messages like an interface server and runs their consumers in this thread."""

    client_address = ("127.0.0.1", 54321)
    server_address = ("testserver", 80)

    def __init__(self, alias: str = "default") -> None:
        self.alias = alias
        self.prefix = f"test{names.random_suffix(8)}!"
        self.reply_channel = self.prefix + names.random_suffix(8)
        self.cookies: SimpleCookie = SimpleCookie()

    @property
    def channel_layer(self) -> ChannelLayerWrapper:
        return get_channel_layer(self.alias)

    # -- the layer side ---------------------------------------------------------

    def send(self, channel: str, content: dict[str, Any] | None = None) -> None:
        """Send ``content`` (default: just this client's reply channel) on ``channel``."""
        content = {"reply_channel": self.reply_channel} if content is None else content
        self.channel_layer.send(channel, content)

    def consume(self, channel: str, fail_on_none: bool = True) -> Any:
        """Receive the next message on ``channel`` and run its routed consumer now."""
        layer = self.channel_layer
        name, content = layer.receive([channel])
        if name is None:
            if fail_on_none:
                raise AssertionError(f"no message waiting on {channel!r}")
            return None
        message = Message(content, name, layer.layer)
        found = layer.router.match(message)
        if found is None:
            if fail_on_none:
                raise AssertionError(f"no route matches the message on {channel!r} "
                                     f"(path={content.get('path')!r})")
            return None
        consumer, kwargs = found
        outbox = Outbox(layer.layer)
        try:
            with _no_connection_recycling(), outbox.activate():
                result = consumer(message, **kwargs)
                if inspect.isawaitable(result):
                    result = asyncio.run(_awaited(outbox, result))
        except ConsumeLater:
            outbox.discard()
            layer.send(name, content)
            return None
        except DenyConnection:
            outbox.discard()
            if name == formats.WEBSOCKET_CONNECT:
                layer.send(content["reply_channel"], {"close": True})
            return None
        except BaseException:
            outbox.discard()
            raise
        outbox.flush()
        return result

    def send_and_consume(self, channel: str, content: dict[str, Any] | None = None,
                         fail_on_none: bool = True) -> Any:
        self.send(channel, content)
        return self.consume(channel, fail_on_none=fail_on_none)

    def receive_raw(self) -> dict[str, Any] | None:
        """The next message on this client's reply channel, or ``None``."""
        _, content = self.channel_layer.receive([self.prefix])
        return content

    def receive(self) -> dict[str, Any] | None:
        return self.receive_raw()

    def join_group(self, group: str) -> None:
        self.channel_layer.group_add(group, self.reply_channel)

    def get_next_message(self, channel: str, require: bool = False) -> Message | None:
        name, content = self.channel_layer.receive([channel])
        if name is None:
            if require:
                raise AssertionError(f"expected a message on {channel!r}, none was waiting")
            return None
        return Message(content, name, self.channel_layer.layer)

    # -- HTTP through the routing ------------------------------------------------

    def _cookie_header(self) -> list[list[bytes]]:
        if not self.cookies:
            return []
        value = "; ".join(f"{k}={m.value}" for k, m in self.cookies.items())
        return [[b"cookie", value.encode("latin-1")]]

    def request(self, method: str, path: str, body: bytes = b"", headers: Any = (),
                *, body_chunk_size: int | None = None, scheme: str = "http",
                root_path: str = "", content_type: str | None = None) -> BridgeResponse:
        """Send ``http.request``, run its consumer, return the assembled response.

        ``body_chunk_size`` sends the body past its first chunk on a
        ``body_channel``, as the interface server does for large bodies.
        Cookies set by responses are kept and sent with later requests.
        """
        path, query = _split_path(path)
        header_list = [[b"host", self.server_address[0].encode()], *_header_list(headers),
                       *self._cookie_header()]
        if content_type is not None:
            header_list.append([b"content-type", content_type.encode("latin-1")])
        if body:
            header_list.append([b"content-length", str(len(body)).encode()])
        message: dict[str, Any] = {
            "reply_channel": self.reply_channel, "http_version": "1.1",
            "method": method.upper(), "scheme": scheme, "path": path, "query_string": query,
            "root_path": root_path, "headers": header_list,
            "client": list(self.client_address), "server": list(self.server_address),
        }
        chunks: list[bytes] = []
        if body_chunk_size and len(body) > body_chunk_size:
            message["body"] = body[:body_chunk_size]
            rest = body[body_chunk_size:]
            chunks = [rest[i:i + body_chunk_size] for i in range(0, len(rest), body_chunk_size)]
            message["body_channel"] = self.channel_layer.new_channel(formats.HTTP_REQUEST_BODY)
        else:
            message["body"] = body
        for index, chunk in enumerate(chunks):
            self.channel_layer.send(message["body_channel"],
                                    {"content": chunk, "more_content": index < len(chunks) - 1})
        self.send_and_consume(formats.HTTP_REQUEST, message)
        replies = []
        while True:
            reply = self.receive_raw()
            if reply is None:
                break
            replies.append(reply)
            if not reply.get("more_content", False):
                break
        response = BridgeResponse(replies)
        for key, morsel in response.cookies.items():
            if morsel["max-age"] == "0":
                self.cookies.pop(key, None)
            else:
                self.cookies[key] = morsel.value
        return response

    def get(self, path: str, headers: Any = (), **kwargs: Any) -> BridgeResponse:
        return self.request("GET", path, headers=headers, **kwargs)

    def post(self, path: str, data: Any = None, content_type: str | None = None,
             headers: Any = (), **kwargs: Any) -> BridgeResponse:
        """POST ``data``: a dict is multipart-encoded (files allowed), like Django's client."""
        if isinstance(data, dict) and content_type is None:
            body = django_client.encode_multipart(django_client.BOUNDARY, data)
            content_type = django_client.MULTIPART_CONTENT
        elif isinstance(data, str):
            body = data.encode("utf-8")
        else:
            body = data or b""
        return self.request("POST", path, body, headers, content_type=content_type, **kwargs)


async def _awaited(outbox: Outbox, awaitable: Any) -> Any:
    with outbox.activate():
        return await awaitable


class WSClient(Client):
    """A WebSocket's messages: ``connect``, ``send``, ``receive``, ``close``, with cookies."""

    def __init__(self, alias: str = "default", headers: Any = ()) -> None:
        super().__init__(alias)
        self.headers = _header_list(headers)
        self.path = "/"
        self.query_string = b""
        self.order = 0

    def connect(self, path: str = "/", headers: Any = (), check_accept: bool = True,
                subprotocols: list[str] | None = None) -> dict[str, Any] | None:
        """Send ``websocket.connect`` and run its consumer; return the first reply.

        With ``check_accept`` a reply other than an accept fails the test.
        """
        self.path, self.query_string = _split_path(path)
        self.order = 0
        message: dict[str, Any] = {
            "reply_channel": self.reply_channel, "scheme": "ws", "path": self.path,
            "query_string": self.query_string, "root_path": "", "order": 0,
            "headers": [[b"host", self.server_address[0].encode()], *self.headers,
                        *_header_list(headers), *self._cookie_header()],
            "client": list(self.client_address), "server": list(self.server_address),
        }
        if subprotocols:
            message["subprotocols"] = list(subprotocols)
        self.send_and_consume(formats.WEBSOCKET_CONNECT, message)
        reply = self.receive_raw()
        if check_accept and not (reply and (reply.get("accept") or reply.get("text") is not None
                                            or reply.get("bytes") is not None)
                                 and not reply.get("close")):
            raise AssertionError(f"the connection was not accepted: {reply!r}")
        return reply

    def send(self, channel_or_text: Any = None, content: Any = None, *,  # type: ignore[override]
             text: str | None = None, bytes: bytes | None = None, json: Any = None) -> Any:
        """Send one frame (``text``, ``bytes`` or ``json``) as ``websocket.receive``, consume it.

        ``send(channel, content)`` with a channel name still sends a raw message.
        """
        if isinstance(channel_or_text, str) and isinstance(content, dict):
            return super().send(channel_or_text, content)
        if isinstance(channel_or_text, str) and text is None:
            text = channel_or_text
        if json is not None:
            text = jsonlib.dumps(json)
        self.order += 1
        message: dict[str, Any] = {"reply_channel": self.reply_channel, "path": self.path,
                                   "order": self.order}
        if bytes is not None:
            message["bytes"] = bytes
        else:
            message["text"] = text if text is not None else ""
        return self.send_and_consume(formats.WEBSOCKET_RECEIVE, message)

    def receive(self, json: bool = False) -> Any:  # type: ignore[override]
        """The next reply; with ``json`` the decoded JSON of its text frame."""
        reply = self.receive_raw()
        if json and reply is not None and reply.get("text") is not None:
            return jsonlib.loads(reply["text"])
        return reply

    def close(self, code: int = 1000) -> Any:
        """Send ``websocket.disconnect`` and run its consumer (if one is routed)."""
        self.order += 1
        return self.send_and_consume(formats.WEBSOCKET_DISCONNECT, {
            "reply_channel": self.reply_channel, "path": self.path, "code": code,
            "order": self.order}, fail_on_none=False)

    # -- login ----------------------------------------------------------------

    def _take_cookies(self, client: django_client.Client) -> None:
        for key, morsel in client.cookies.items():
            self.cookies[key] = morsel.value

    def login(self, **credentials: Any) -> bool:
        """Log in with Django's test client; its session cookie is sent from now on."""
        client = django_client.Client()
        ok = client.login(**credentials)
        self._take_cookies(client)
        return ok

    def force_login(self, user: Any, backend: str | None = None) -> None:
        client = django_client.Client()
        client.force_login(user, backend)
        self._take_cookies(client)


class apply_routes(ContextDecorator):
    """Use ``routes`` as the routing of ``alias`` inside a block, function or test class."""

    def __init__(self, routes: Any, alias: str = "default") -> None:
        self.routes = routes
        self.alias = alias
        self._saved: list[Any] = []

    def __enter__(self) -> apply_routes:
        wrapper = get_channel_layer(self.alias)
        self._saved.append((wrapper, wrapper._router))
        wrapper.router = DjangoRouter(self.routes)
        return self

    def __exit__(self, *exc: Any) -> None:
        wrapper, router = self._saved.pop()
        wrapper.router = router

    def __call__(self, target: Any) -> Any:
        if inspect.isclass(target):
            for name, method in list(vars(target).items()):
                if name.startswith("test") and callable(method):
                    setattr(target, name, self._wrap(method))
            return target
        return self._wrap(target)

    def _wrap(self, function: Any) -> Any:
        @functools.wraps(function)
        def inner(*args: Any, **kwargs: Any) -> Any:
            with apply_routes(self.routes, self.alias):
                return function(*args, **kwargs)

        return inner


class ChannelLiveServerTestCase(TransactionTestCase):
    """Real ``interfaceserver`` + ``manage.py runworker`` processes over the test database.

    Started once per class (``setUpClass``) and stopped after it. Set
    ``worker_processes``/``worker_threads`` for more workers, ``channel_layer_url`` for
    a layer other than a temporary SQLite file (e.g. Redis). Settings overridden in the
    test process do not reach the processes: they load the project's settings module.
    """

    host: str = "127.0.0.1"
    worker_processes: int = 1
    worker_threads: int = 1
    channel_layer_url: str | None = None
    start_timeout: float = 30.0
    _live_stack: Any = None

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        from worker.django.live import LiveStack

        stack = LiveStack(host=cls.host, workers=cls.worker_processes,
                          threads=cls.worker_threads, layer_url=cls.channel_layer_url,
                          start_timeout=cls.start_timeout)
        cls.addClassCleanup(stack.stop)
        stack.start()
        cls._live_stack = stack

    def run(self, result: Any = None) -> Any:
        if self._live_stack is None:  # setUpClass failed: unittest reports it
            return super().run(result)
        with swap_layers(self._live_stack.wrappers()):
            return super().run(result)

    @classproperty
    def live_server_url(cls) -> str:
        """``http://127.0.0.1:<port>`` of the interface server."""
        return cls._live_stack.url

    @classproperty
    def live_server_ws_url(cls) -> str:
        """``ws://127.0.0.1:<port>`` of the interface server."""
        return cls._live_stack.ws_url

    @classproperty
    def live_worker_pids(cls) -> list[int]:
        """The PIDs of the runworker processes."""
        return cls._live_stack.worker_pids

    @classmethod
    def live_server_output(cls) -> str:
        """The tail of every live process's output, for assertion messages."""
        return cls._live_stack.explain() if cls._live_stack is not None else ""
