"""Switchboard's routing: the two WebSocket endpoints; ``http.request`` is not routed,
so every request reaches the Django views (``worker.django``'s fallback route)."""

from worker.channels import Group
from worker.routing import route

GROUP = "bench"


def _frame(message):
    text = message.get("text")
    return {"text": text} if text is not None else {"bytes": message.get("bytes") or b""}


def accept(message):
    message.reply_channel.send({"accept": True})


def echo(message):
    message.reply_channel.send(_frame(message))


def group_connect(message):
    Group(GROUP).add(message.reply_channel)
    message.reply_channel.send({"accept": True})


def group_receive(message):
    Group(GROUP).send(_frame(message))


def group_disconnect(message):
    Group(GROUP).discard(message.reply_channel)


def ignore(message):
    """Nothing to do (the socket is gone)."""


channel_routing = [
    route("websocket.connect", accept, path=r"^/ws/echo/$"),
    route("websocket.receive", echo, path=r"^/ws/echo/$"),
    route("websocket.disconnect", ignore, path=r"^/ws/echo/$"),
    route("websocket.connect", group_connect, path=r"^/ws/group/$"),
    route("websocket.receive", group_receive, path=r"^/ws/group/$"),
    route("websocket.disconnect", group_disconnect, path=r"^/ws/group/$"),
]
