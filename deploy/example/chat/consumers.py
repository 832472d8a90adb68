"""The chat's consumers: a multiplexed WebSocket, a long-poll endpoint and an event stream.

Each consumer runs for one message and returns; none of them waits for
another message. What lasts longer than one message -- a socket in a room, a
held long-poll request, an open event stream -- is a group membership in the
channel layer plus, for presence, a row in the database.

``/ws/rooms/<room>/?name=<name>``
    ``RoomSocket``, a ``WebsocketDemultiplexer`` with two streams. ``chat``:
    the newcomer gets the room's history, and every ``{"text": ...}`` it
    sends is stored and published. ``presence``: joining and leaving updates
    the member list everyone sees.
``/rooms/<room>/poll/?cursor=<id>``
    ``LongPoll``: answers at once with what is newer than the cursor, or
    holds the request (its reply channel waits in a group) until something
    is published or ``LONGPOLL_TIMEOUT`` seconds pass. The timeout is an
    ``asgi.delay`` message that the delay server (``rundelay``) hands back
    to ``poll_timeout`` when it is due.
``/rooms/<room>/events/``
    ``EventStream``: a ``text/event-stream`` response whose head goes out
    at once and whose body grows with every published event until the
    client leaves.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar
from urllib.parse import parse_qs

from chat import rooms
from django.conf import settings

from asgi_spec import formats
from worker.channels import Channel, Group
from worker.django.consumers import HttpConsumer, JsonWebsocketConsumer, WebsocketDemultiplexer
from worker.message import Message

POLL_TIMEOUT_CHANNEL = "chat.poll_timeout"


def query(message: Message) -> dict[str, str]:
    """The request's query parameters (the first value of each)."""
    raw = message.get("query_string") or b""
    text = raw.decode("latin-1") if isinstance(raw, bytes) else str(raw)
    return {key: values[0] for key, values in parse_qs(text).items()}


def header(message: Message, name: bytes) -> str | None:
    for key, value in message.get("headers") or ():
        if key.lower() == name:
            return value.decode("latin-1")
    return None


class ChatStream(JsonWebsocketConsumer):
    """Stream ``chat``: history on connect, messages both ways."""

    def connection_groups(self, room: str = "", **kwargs: Any) -> list[str]:
        return [rooms.room_group(room)]

    def connect(self, message: Message, room: str = "", **kwargs: Any) -> None:
        the_room = rooms.get_room(room)
        self.send({"type": "history", "messages": rooms.history(the_room)})

    def receive(self, content: Any = None, room: str = "", **kwargs: Any) -> None:
        if not isinstance(content, dict):
            return
        presence = rooms.Presence.objects.filter(channel=self.message.reply_channel.name).first()
        name = presence.name if presence is not None else "guest"
        rooms.post(rooms.get_room(room), name, content.get("text"))


class PresenceStream(JsonWebsocketConsumer):
    """Stream ``presence``: who is in the room, sent to all on every join and leave."""

    def connect(self, message: Message, room: str = "", **kwargs: Any) -> None:
        name = query(message).get("name", "")
        rooms.join(rooms.get_room(room), message.reply_channel.name, name, message.layer)

    def receive(self, content: Any = None, room: str = "", **kwargs: Any) -> None:
        """A client may ask for the list again: ``{"stream": "presence", "payload": {}}``."""
        self.send(rooms.presence_payload(rooms.get_room(room), self.message.layer))

    def disconnect(self, message: Message, **kwargs: Any) -> None:
        rooms.leave(message.reply_channel.name, message.layer)


class RoomSocket(WebsocketDemultiplexer):
    consumers: ClassVar[dict[str, Any]] = {"chat": ChatStream, "presence": PresenceStream}


def _json(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode("utf-8")


class LongPoll(HttpConsumer):
    """``GET /rooms/<room>/poll/?cursor=<id>``: frames newer than the cursor, or wait.

    The answer is ``{"frames": [...], "cursor": <id> | null}``; ``null``
    means "keep your cursor" (a wake-up or a timeout).
    """

    def get(self, message: Message, room: str = "", **kwargs: Any) -> None:
        the_room = rooms.get_room(room)
        raw_cursor = query(message).get("cursor", "")
        if not raw_cursor.isdigit():
            # First poll: the history and who is here, and the cursor to go on from.
            messages = rooms.history(the_room)
            frames = [rooms.frame("chat", {"type": "history", "messages": messages}),
                      rooms.frame("presence", rooms.presence_payload(the_room, message.layer))]
            cursor = messages[-1]["id"] if messages else 0
            self.respond(200, rooms.JSON_HEADERS, _json({"frames": frames, "cursor": cursor}))
            return
        cursor = int(raw_cursor)
        group = Group(rooms.poll_group(room), message.layer)
        # Wait first, then look: a message stored between the two is either
        # found by the query or wakes this request through the group.
        group.add(message.reply_channel)
        newer = rooms.history(the_room, after=cursor)
        if newer:
            group.discard(message.reply_channel)
            frames = [rooms.frame("chat", {"type": "message", "message": m}) for m in newer]
            self.respond(200, rooms.JSON_HEADERS,
                         _json({"frames": frames, "cursor": newer[-1]["id"]}))
            return
        delay_ms = int(settings.LONGPOLL_TIMEOUT * 1000)
        Channel(formats.ASGI_DELAY).send({
            "channel": POLL_TIMEOUT_CHANNEL, "delay": delay_ms,
            "content": {"reply_channel": message.reply_channel.name, "room": room},
        })

    def post(self, message: Message, room: str = "", **kwargs: Any) -> None:
        self.respond(405, {"allow": "GET", "content-type": "text/plain"},
                     b"send messages with POST /rooms/<room>/messages/")

    def disconnect(self, message: Message, room: str = "", **kwargs: Any) -> None:
        Group(rooms.poll_group(room), message.layer).discard(message.reply_channel)


def poll_timeout(message: Message) -> None:
    """A held long-poll request's time is up: answer it with no frames, if it still waits."""
    reply_channel, room = message["reply_channel"], message["room"]
    group = Group(rooms.poll_group(room), message.layer)
    if reply_channel not in message.layer.group_channels(group.name):
        return  # answered already, or the client left
    group.discard(reply_channel)
    Channel(reply_channel, message.layer, validator=formats.validate_http_response).send(
        {"status": 200, "headers": [[k.encode(), v.encode()] for k, v in
                                    rooms.JSON_HEADERS.items()],
         "content": _json({"frames": [], "cursor": None})})


class EventStream(HttpConsumer):
    """``GET /rooms/<room>/events/``: server-sent events, history first, then live."""

    def get(self, message: Message, room: str = "", **kwargs: Any) -> None:
        the_room = rooms.get_room(room)
        last_id = header(message, b"last-event-id") or ""
        after = int(last_id) if last_id.isdigit() else None
        # The head must reach the server before any event chunk of the group, so
        # it leaves now; then the stream joins the group, and only then is the
        # history read: a message posted meanwhile comes live, in the history,
        # or both (the page drops repeated ids), never neither.
        self.respond(200, {"content-type": "text/event-stream; charset=utf-8",
                           "cache-control": "no-cache", "x-accel-buffering": "no"},
                     b"retry: 2000\n\n", more_content=True, immediately=True)
        Group(rooms.sse_group(room), message.layer).add(message.reply_channel)
        body = b""
        for item in rooms.history(the_room, after=after):
            body += rooms.sse_event("chat", {"type": "message", "message": item}, item["id"])
        body += rooms.sse_event("presence", rooms.presence_payload(the_room, message.layer))
        self.send_chunk(body, more_content=True, immediately=True)

    def disconnect(self, message: Message, room: str = "", **kwargs: Any) -> None:
        Group(rooms.sse_group(room), message.layer).discard(message.reply_channel)


def reject(message: Message, **kwargs: Any) -> None:
    """WebSockets to any other path are refused."""
    message.reply_channel.send({"close": True})


def ignore(message: Message, **kwargs: Any) -> None:
    """Frames and disconnects of sockets and requests this app never took."""
