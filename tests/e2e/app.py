"""The plain (non-Django) consumers the end-to-end tests run in real ``runworker`` processes.

Run as ``runworker tests.e2e.app:channel_routing`` from the repository root.

HTTP (every JSON answer carries the worker's ``pid``):

* ``/echo...`` -> 200 (or ``?status=N``) JSON describing the request: method,
  path, query string, headers, body length and SHA-256, and whether the body
  came through a ``body_channel``; response headers ``x-e2e-worker`` and two
  ``x-e2e-multi`` values;
* ``/stream?n=N&interval=S`` -> a streamed ``text/plain`` body of N lines
  ``"<i> <wall time>"``, one chunk every S seconds (sent immediately, not at return);
* ``/events/<topic>`` -> a server-sent-events response left open, its reply
  channel in group ``sse-<topic>``; ``/events/<topic>/publish?data=X`` sends
  ``data: X`` to every open stream (``&end=1`` ends them) and answers how many
  there were;
* ``/poll/<topic>`` -> a long-poll: no answer, the reply channel waits in group
  ``poll-<topic>``; ``POST /poll/<topic>/publish`` answers every waiter with
  the POST body (409 when nobody waits);
* ``/slow?s=S&id=X`` -> reports ``{"id", "pid"}`` on channel ``e2e.observe``,
  sleeps S seconds (a slow consumer), then answers ``slow X``;
* anything else -> ``tests.bench.app`` (``GET /`` is 200 ``hello``).

WebSocket:

* ``/ws/echo/`` -> every frame echoed (``tests.bench.app``), empty ones too;
* ``/ws/close/`` -> a text frame ``close <code>`` is answered with ``bye`` and
  a close with that code; anything else is echoed;
* ``/ws/chat/<room>/`` -> joins group ``chat-<room>``; each text frame is
  broadcast to the room as ``<worker pid>|<text>``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from typing import Any
from urllib.parse import parse_qs

from tests.bench import app as bench
from worker.channels import Channel, Group
from worker.consumers import HttpConsumer, WebsocketConsumer, http_response
from worker.message import Message
from worker.routing import route

#: Channel on which consumers report what they are doing, for the tests to read.
OBSERVE = "e2e.observe"
#: How long a consumer waits for the next chunk of a request body.
BODY_TIMEOUT = 10.0


def query(message: Message) -> dict[str, str]:
    """The query string as ``{name: first value}``."""
    raw = message.get("query_string", b"").decode("latin-1")
    return {name: values[0] for name, values in parse_qs(raw, keep_blank_values=True).items()}


def read_body(message: Message) -> tuple[bytes, int]:
    """The whole request body and how many ``body_channel`` chunks it took.

    The inline ``body`` comes first; a ``body_channel`` then delivers the rest
    in chunks until one says ``more_content: False``. Raises when a chunk does
    not come in time or the client went away (a ``closed`` chunk).
    """
    parts = [message.get("body", b"")]
    channel = message.get("body_channel")
    chunks = 0
    while channel:
        name, chunk = message.layer.receive([channel], block=True, timeout=BODY_TIMEOUT)
        if name is None:
            raise TimeoutError(f"no chunk on {channel} within {BODY_TIMEOUT} s")
        if chunk.get("closed"):
            raise ConnectionAbortedError("the client went away during the body")
        chunks += 1
        parts.append(chunk.get("content", b""))
        if not chunk.get("more_content", False):
            break
    return b"".join(parts), chunks


def reply_json(message: Message, payload: dict[str, Any], status: int = 200,
               headers: list[tuple[str, str]] | None = None) -> None:
    payload = {**payload, "pid": os.getpid()}
    message.reply_channel.send(http_response(
        status, [("content-type", "application/json"), *(headers or [])],
        json.dumps(payload)))


def http_echo(message: Message) -> None:
    body, chunks = read_body(message)
    headers: dict[str, list[str]] = {}
    for name, value in message["headers"]:
        headers.setdefault(name.decode("latin-1"), []).append(value.decode("latin-1"))
    status = int(query(message).get("status", "200"))
    reply_json(message, {
        "method": message["method"],
        "path": message["path"],
        "query_string": message["query_string"].decode("latin-1"),
        "headers": headers,
        "body_length": len(body),
        "body_sha256": hashlib.sha256(body).hexdigest(),
        "body_chunks": chunks,
    }, status, [("x-e2e-worker", str(os.getpid())), ("x-e2e-multi", "one"),
                ("x-e2e-multi", "two")])


def http_stream(message: Message) -> None:
    """A response streamed over time: each chunk goes out as soon as it is made."""
    params = query(message)
    count, interval = int(params.get("n", "3")), float(params.get("interval", "0.1"))
    reply = message.reply_channel
    reply.send(http_response(200, {"content-type": "text/plain"}, b"", more_content=True),
               immediately=True)
    for index in range(count):
        if index:
            time.sleep(interval)
        reply.send({"content": f"{index} {time.time():.6f}\n".encode(),
                    "more_content": index < count - 1}, immediately=True)


class ServerSentEvents(HttpConsumer):
    """Opens an event stream and leaves it open; ``publish_event`` feeds it."""

    def connection_groups(self, topic: str = "", **kwargs: Any) -> list[str]:
        return [f"sse-{topic}"]

    def get(self, message: Message, **kwargs: Any) -> None:
        self.respond(200, {"content-type": "text/event-stream", "cache-control": "no-cache"},
                     more_content=True)


def publish_event(message: Message, topic: str) -> None:
    group = f"sse-{topic}"
    params = query(message)
    listeners = message.layer.group_channels(group)
    if params.get("end"):
        Group(group).send({"content": b"", "more_content": False})
        for channel in listeners:  # after the send above, when this consumer returns
            Group(group).discard(channel, immediately=False)
    else:
        Group(group).send({"content": f"data: {params.get('data', '')}\n\n".encode(),
                           "more_content": True})
    reply_json(message, {"listeners": len(listeners)})


class LongPoll(HttpConsumer):
    """Answers nothing: the request waits in group ``poll-<topic>``."""

    def connection_groups(self, topic: str = "", **kwargs: Any) -> list[str]:
        return [f"poll-{topic}"]

    def get(self, message: Message, **kwargs: Any) -> None:
        pass


def poll_publish(message: Message, topic: str) -> None:
    group = f"poll-{topic}"
    body, _ = read_body(message)
    waiting = message.layer.group_channels(group)
    if not waiting:
        reply_json(message, {"waiting": 0}, status=409)
        return
    LongPoll.group_respond(group, 200, {"content-type": "text/plain"}, body)
    reply_json(message, {"waiting": len(waiting)})


def http_slow(message: Message) -> None:
    params = query(message)
    Channel(OBSERVE).send({"id": params.get("id", ""), "pid": os.getpid(),
                           "path": message["path"]}, immediately=True)
    time.sleep(float(params.get("s", "1")))
    message.reply_channel.send(http_response(200, {"content-type": "text/plain"},
                                             f"slow {params.get('id', '')}"))


class CloseOnRequest(WebsocketConsumer):
    """Echoes frames; ``close <code>`` makes it say ``bye`` and close with ``code``."""

    def receive(self, text: str | None = None, bytes: bytes | None = None,
                **kwargs: Any) -> None:
        if text is not None and text.startswith("close "):
            self.send(text="bye", close=int(text.split()[1]))
        elif text is not None:
            self.send(text=text)
        else:
            self.send(bytes=bytes or b"")


class Chat(WebsocketConsumer):
    """Everyone in a room gets every message, stamped with the worker that relayed it."""

    def connection_groups(self, room: str = "", **kwargs: Any) -> list[str]:
        return [f"chat-{room}"]

    def receive(self, text: str | None = None, bytes: bytes | None = None,
                room: str = "", **kwargs: Any) -> None:
        time.sleep(0.005)  # a little work, so that concurrent frames spread over workers
        self.group_send(f"chat-{room}", text=f"{os.getpid()}|{text}")


channel_routing = [
    route("http.request", http_echo, path=r"^/echo"),
    route("http.request", http_stream, path=r"^/stream$"),
    route("http.request", publish_event, path=r"^/events/(?P<topic>\w+)/publish$"),
    ServerSentEvents.as_route(path=r"^/events/(?P<topic>\w+)$"),
    route("http.request", poll_publish, path=r"^/poll/(?P<topic>\w+)/publish$"),
    LongPoll.as_route(path=r"^/poll/(?P<topic>\w+)$"),
    route("http.request", http_slow, path=r"^/slow$"),
    route("http.disconnect", bench.ignore),
    CloseOnRequest.as_route(path=r"^/ws/close/$"),
    Chat.as_route(path=r"^/ws/chat/(?P<room>\w+)/$"),
    *bench.channel_routing,
]
