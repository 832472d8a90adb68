"""The example app: a chat room in plain consumers (no Django), served by ``make run``.

``GET /`` answers the page (``chat.html``); the page opens a WebSocket to
``/ws/chat/``. Every socket joins group ``lobby`` when it connects, every text
frame it sends is broadcast to the group, and it leaves the group when it goes.
Run it with the top-level ``Procfile``: ``interfaceserver`` + ``runworker
deploy.example.app:channel_routing``.
"""

from __future__ import annotations

import json
from pathlib import Path

from worker.channels import Group
from worker.routing import route

ROOM = Group("lobby")
PAGE = (Path(__file__).with_name("chat.html")).read_bytes()
MAX_TEXT = 2000


def http_request(message):
    """The chat page at ``/``, a health check at ``/healthz``, 404 elsewhere."""
    if message["path"] == "/" and message["method"] in ("GET", "HEAD"):
        reply = {"status": 200, "headers": [[b"content-type", b"text/html; charset=utf-8"]],
                 "content": PAGE if message["method"] == "GET" else b""}
    elif message["path"] == "/healthz":
        reply = {"status": 200, "headers": [[b"content-type", b"text/plain"]], "content": b"ok"}
    else:
        reply = {"status": 404, "headers": [[b"content-type", b"text/plain"]],
                 "content": b"not found"}
    message.reply_channel.send(reply)


def chat_connect(message):
    ROOM.add(message.reply_channel)
    message.reply_channel.send({"accept": True})


def chat_receive(message):
    text = (message.get("text") or "").strip()[:MAX_TEXT]
    if text:
        ROOM.send({"text": json.dumps({"text": text})})


def chat_disconnect(message):
    ROOM.discard(message.reply_channel)


def reject(message):
    message.reply_channel.send({"close": True})


def ignore(message):
    """Frames and disconnects of sockets this app never accepted."""


channel_routing = [
    route("http.request", http_request),
    route("websocket.connect", chat_connect, path=r"^/ws/chat/$"),
    route("websocket.receive", chat_receive, path=r"^/ws/chat/$"),
    route("websocket.disconnect", chat_disconnect, path=r"^/ws/chat/$"),
    route("websocket.connect", reject),
    route(["websocket.receive", "websocket.disconnect"], ignore),
]
