"""The benchmark's plain consumers, as light as a consumer can be.

Run with ``runworker tests.bench.app:channel_routing`` from the repository root.

* ``http.request`` ``GET /`` -> 200 ``hello`` (anything else -> 404);
* ``/ws/echo/`` -> every frame is sent back to its socket;
* ``/ws/group/`` -> the socket joins group ``bench`` before it is accepted, and
  every frame it sends goes to the whole group;
* a WebSocket on any other path is rejected.
"""

from __future__ import annotations

from worker.channels import Group
from worker.routing import route

GROUP = "bench"
_TEXT_PLAIN = [[b"content-type", b"text/plain"]]
_HELLO = {"status": 200, "headers": _TEXT_PLAIN, "content": b"hello"}
_NOT_FOUND = {"status": 404, "headers": _TEXT_PLAIN, "content": b"not found"}


def _frame(message):
    text = message.get("text")
    return {"text": text} if text is not None else {"bytes": message.get("bytes") or b""}


def http_hello(message):
    ok = message["method"] == "GET" and message["path"] == "/"
    message.reply_channel.send(_HELLO if ok else _NOT_FOUND)


def ws_accept(message):
    message.reply_channel.send({"accept": True})


def ws_echo(message):
    message.reply_channel.send(_frame(message))


def ws_group_connect(message):
    Group(GROUP).add(message.reply_channel)
    message.reply_channel.send({"accept": True})


def ws_group_receive(message):
    Group(GROUP).send(_frame(message))


def ws_group_disconnect(message):
    Group(GROUP).discard(message.reply_channel)


def ws_reject(message):
    message.reply_channel.send({"close": True})


def ignore(message):
    """Nothing to do (the socket is already gone, or not ours)."""


channel_routing = [
    route("http.request", http_hello),
    route("websocket.connect", ws_accept, path=r"^/ws/echo/$"),
    route("websocket.receive", ws_echo, path=r"^/ws/echo/$"),
    route("websocket.disconnect", ignore, path=r"^/ws/echo/$"),
    route("websocket.connect", ws_group_connect, path=r"^/ws/group/$"),
    route("websocket.receive", ws_group_receive, path=r"^/ws/group/$"),
    route("websocket.disconnect", ws_group_disconnect, path=r"^/ws/group/$"),
    route("websocket.connect", ws_reject),
    route(["websocket.receive", "websocket.disconnect"], ignore),
]
