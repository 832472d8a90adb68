"""What a room does, whichever transport a client uses: post, history, presence, fan-out.

Three kinds of client listen to a room, each through its own group:

* WebSockets (``chat.room.<slug>``) get multiplexed frames,
  ``{"stream": "chat" | "presence", "payload": {...}}``;
* server-sent-event streams (``chat.sse.<slug>``) get ``text/event-stream``
  chunks of their still-open HTTP responses;
* long-poll requests (``chat.poll.<slug>``) wait with no answer yet; an event
  answers every waiting request at once and takes it out of the group.

``publish`` sends one event to all three. It runs inside a consumer (a
Django view is one), so its sends leave when that consumer returns.
"""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any

from chat.models import MAX_NAME, MAX_TEXT, Message, Presence, Room
from django.conf import settings
from django.db import transaction

from worker.channels import Group
from worker.consumers import HttpConsumer, WebsocketMultiplexer

logger = logging.getLogger("chat")

JSON_HEADERS = {"content-type": "application/json", "cache-control": "no-store"}
_NOT_IN_NAMES = re.compile(r"[^\w .'\-]+")


def room_group(slug: str) -> str:
    return f"chat.room.{slug}"


def sse_group(slug: str) -> str:
    return f"chat.sse.{slug}"


def poll_group(slug: str) -> str:
    return f"chat.poll.{slug}"


def clean_name(raw: Any) -> str:
    """A display name: printable word characters, at most ``MAX_NAME``; ``guest`` if empty."""
    name = _NOT_IN_NAMES.sub("", str(raw or "")).strip()[:MAX_NAME]
    return name or "guest"


def clean_text(raw: Any) -> str:
    return str(raw or "").strip()[:MAX_TEXT]


def get_room(slug: str) -> Room:
    room, _ = Room.objects.get_or_create(slug=slug)
    return room


def history(room: Room, after: int | None = None) -> list[dict[str, Any]]:
    """The last ``CHAT_HISTORY`` messages, or (``after``) those newer than that id."""
    limit = settings.CHAT_HISTORY
    if after is None:
        newest = list(room.messages.order_by("-id")[:limit])
        return [message.as_dict() for message in reversed(newest)]
    return [message.as_dict() for message in room.messages.filter(id__gt=after)[:limit]]


def frame(stream: str, payload: dict[str, Any]) -> dict[str, Any]:
    """A multiplexed frame, as ``worker.consumers.WebsocketDemultiplexer`` reads them."""
    return {"stream": stream, "payload": payload}


def sse_event(stream: str, payload: dict[str, Any], event_id: int | None = None) -> bytes:
    """One server-sent event: the stream is the event type, the payload its JSON data."""
    lines = [f"event: {stream}", f"data: {json.dumps(payload, separators=(',', ':'))}"]
    if event_id is not None:
        lines.insert(0, f"id: {event_id}")
    return ("\n".join(lines) + "\n\n").encode("utf-8")


def publish(slug: str, stream: str, payload: dict[str, Any],
            event_id: int | None = None) -> None:
    """Send one event to every WebSocket, event stream and long-poll request of the room."""
    WebsocketMultiplexer.group_send(room_group(slug), stream, payload)
    Group(sse_group(slug)).send({"content": sse_event(stream, payload, event_id),
                                 "more_content": True})
    # A wake-up carries the event but no cursor: the client polls again from
    # its own cursor and the database fills any gap two racing wake-ups left.
    body = json.dumps({"frames": [frame(stream, payload)], "cursor": None})
    HttpConsumer.group_respond(poll_group(slug), 200, JSON_HEADERS, body)


def post(room: Room, name: str, text: str) -> dict[str, Any] | None:
    """Store a message and publish it; ``None`` (nothing stored) when the text is empty."""
    text = clean_text(text)
    if not text:
        return None
    message = Message.objects.create(room=room, name=clean_name(name), text=text)
    data = message.as_dict()
    publish(room.slug, "chat", {"type": "message", "message": data}, event_id=message.id)
    return data


def members(room: Room, layer: Any) -> list[str]:
    """The names present in ``room``, each once.

    A presence row counts only while its socket is still a member of the
    room's group in the layer. A socket whose interface server died without
    saying goodbye drops out of the group when a message to it expires
    unread; its row is deleted here then.
    """
    live = set(layer.group_channels(room_group(room.slug)))
    rows = list(room.presences.all())
    stale = [row.id for row in rows if row.channel not in live]
    if stale:
        Presence.objects.filter(id__in=stale).delete()
    return sorted({row.name for row in rows if row.channel in live}, key=str.lower)


def presence_payload(room: Room, layer: Any) -> dict[str, Any]:
    """Who is present, stamped with when it was looked up.

    Two workers that publish lists at once may have them delivered in either
    order, so clients keep the list with the newest ``at``. The stamp is taken
    before the query: a list stamped later saw every change made before it.
    """
    at = time.time_ns() // 1000  # microseconds: exact in JavaScript numbers
    return {"type": "presence", "members": members(room, layer), "at": at}


def join(room: Room, channel: str, name: str, layer: Any) -> None:
    """Record ``channel`` as present and tell the room."""
    with transaction.atomic():
        Presence.objects.update_or_create(channel=channel,
                                          defaults={"room": room, "name": clean_name(name)})
    publish(room.slug, "presence", presence_payload(room, layer))
    logger.info("%s joined %s", name, room.slug)


def leave(channel: str, layer: Any) -> None:
    """Forget ``channel`` and tell its room who is left."""
    row = Presence.objects.select_related("room").filter(channel=channel).first()
    if row is None:
        return
    row.delete()
    publish(row.room.slug, "presence", presence_payload(row.room, layer))
    logger.info("%s left %s", row.name, row.room.slug)
