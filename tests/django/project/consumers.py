"""WebSocket consumers of the test project, one per session/auth feature."""

from __future__ import annotations

import os

from tests.django.project.notes.bindings import NoteBinding
from worker.django.auth import (
    allowed_hosts_only,
    channel_session_user,
    channel_session_user_from_http,
    http_session_user,
)
from worker.django.consumers import (
    JsonWebsocketConsumer,
    WebsocketConsumer,
    WebsocketDemultiplexer,
)
from worker.django.ordering import enforce_ordering
from worker.django.sessions import channel_session, http_session


def echo(message, **kwargs):
    message.reply_channel.send({"text": message.get("text") or ""})


def accept(message, **kwargs):
    message.reply_channel.send({"accept": True})


@channel_session
def counter_connect(message, **kwargs):
    message.channel_session["count"] = 0
    message.reply_channel.send({"accept": True})


@channel_session
def counter_receive(message, **kwargs):
    message.channel_session["count"] += 1
    message.reply_channel.send({"text": str(message.channel_session["count"])})


@channel_session
def counter_disconnect(message, **kwargs):
    pass


@channel_session
def quiet_connect(message, **kwargs):
    """Reads its channel session but never writes it."""
    message.reply_channel.send({"accept": message.channel_session.get("x") is None})


@http_session
def http_session_connect(message, **kwargs):
    count = None if message.http_session is None else message.http_session.get("count")
    message.reply_channel.send({"accept": True})
    message.reply_channel.send({"text": f"count={count}"})


@http_session_user
def whoami_connect(message, **kwargs):
    message.reply_channel.send({"accept": True})
    message.reply_channel.send({"text": message.user.get_username() or "anonymous"})


@channel_session_user_from_http
def auth_connect(message, **kwargs):
    message.reply_channel.send({"accept": True})


@channel_session_user
def auth_receive(message, **kwargs):
    message.reply_channel.send({"text": message.user.get_username() or "anonymous"})


@allowed_hosts_only
def origin_connect(message, **kwargs):
    message.reply_channel.send({"accept": True})


class RoomConsumer(WebsocketConsumer):
    """A class consumer using the session flag: remembers the room it joined."""

    channel_session = True

    def connect(self, message, room=None, **kwargs):
        message.channel_session["room"] = room
        self.accept()

    def receive(self, text=None, bytes=None, **kwargs):
        self.send(text=f"{self.message.channel_session['room']}:{text}")


class WhoConsumer(JsonWebsocketConsumer):
    """A class consumer using the http_user flag: message.user on every message."""

    http_user = True

    def connect(self, message, **kwargs):
        self.accept()
        self.send({"user": message.user.get_username() or None})

    def receive(self, content=None, **kwargs):
        self.send({"user": self.message.user.get_username() or None, "echo": content})


@channel_session
class DecoratedClassConsumer(WebsocketConsumer):
    """A class consumer decorated as a whole."""

    def connect(self, message, **kwargs):
        message.channel_session["hits"] = 0
        self.accept()

    def receive(self, text=None, bytes=None, **kwargs):
        self.message.channel_session["hits"] += 1
        self.send(text=str(self.message.channel_session["hits"]))


class ChatConsumer(JsonWebsocketConsumer):
    """Group chat: every JSON frame goes to the room's group, signed with the sender's
    user name and the worker process that relayed it."""

    http_user = True

    def connection_groups(self, room=None, **kwargs):
        return [f"chat-{room}"]

    def receive(self, content=None, room=None, **kwargs):
        user = self.message.user.get_username() or None
        self.group_send(f"chat-{room}", {"user": user, "text": content.get("text"),
                                         "pid": os.getpid()})


class NotesDemultiplexer(WebsocketDemultiplexer):
    """The notes binding on stream "notes"; the socket hears about every note."""

    http_user = True
    groups = ["notes"]
    consumers = {"notes": NoteBinding.consumer}


def _record_order(message):
    """Count the message in the channel session; note ``reply_channel order count pid``
    in the file ``$SWITCHBOARD_ORDER_LOG`` (one append per line, safe across processes)."""
    session = message.channel_session
    count = session.get("count", 0)
    session["count"] = count + 1
    path = os.environ.get("SWITCHBOARD_ORDER_LOG")
    if path:
        line = f"{message['reply_channel']} {message['order']} {count} {os.getpid()}\n"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
    return count


@enforce_ordering
@channel_session
def ordered_connect(message, **kwargs):
    _record_order(message)
    message.reply_channel.send({"accept": True})


@enforce_ordering
@channel_session
def ordered_receive(message, **kwargs):
    count = _record_order(message)
    message.reply_channel.send({"text": f"{message['order']}:{count}"})


@enforce_ordering
@channel_session
def ordered_disconnect(message, **kwargs):
    _record_order(message)


class OrderedClassConsumer(WebsocketConsumer):
    """strict_ordering with a session flag: frames answered in order with a count."""

    strict_ordering = True
    channel_session = True

    def receive(self, text=None, bytes=None, **kwargs):
        count = _record_order(self.message)
        self.send(text=f"{text}:{count}")
