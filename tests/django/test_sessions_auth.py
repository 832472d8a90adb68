"""Priority 3: channel/HTTP sessions, message.user and the Origin check for consumers."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from django.test import override_settings

from worker.django.consumers import WebsocketConsumer
from worker.django.sessions import channel_session, channel_session_key
from worker.django.testing import WSClient, apply_routes
from worker.routing import route


@pytest.fixture
def alice(db):
    return User.objects.create_user("alice", password="secret-password")


def test_channel_session_lasts_for_one_connection_and_is_private_to_it(db):
    """Values a consumer stores in message.channel_session are there on the next message of
    the same connection, and not on another connection."""
    one, two = WSClient(), WSClient()
    one.connect("/ws/counter/")
    two.connect("/ws/counter/")
    for expected in ("1", "2", "3"):
        one.send(text="x")
        assert one.receive() == {"text": expected}
    two.send(text="x")
    assert two.receive() == {"text": "1"}


def test_channel_session_is_deleted_on_disconnect(db):
    """websocket.disconnect deletes the connection's session row: sessions do not pile up."""
    client = WSClient()
    client.connect("/ws/counter/")
    key = channel_session_key(client.reply_channel)
    assert Session.objects.filter(session_key=key).exists()
    client.close()
    assert not Session.objects.filter(session_key=key).exists()


def test_a_channel_session_that_is_never_written_is_never_saved(db):
    """A consumer that only reads its channel session creates no database row."""
    before = Session.objects.count()
    client = WSClient()
    assert client.connect("/ws/quiet/") == {"accept": True}
    assert Session.objects.count() == before


def test_channel_sessions_expire_after_channel_session_expiry(db):
    """A saved channel session expires CHANNEL_SESSION_EXPIRY seconds after its last save, so
    a connection lost without a disconnect leaves nothing for clearsessions to keep."""
    with override_settings(CHANNEL_SESSION_EXPIRY=120):
        client = WSClient()
        client.connect("/ws/counter/")
    store = SessionStore(session_key=channel_session_key(client.reply_channel))
    assert 110 <= store.get_expiry_age() <= 120


def test_channel_session_key_is_stable_and_session_sized():
    """The key of a reply channel's session is 32 characters and depends only on it."""
    key = channel_session_key("srv!abc")
    assert len(key) == 32 and key.startswith("chn")
    assert key == channel_session_key("srv!abc") != channel_session_key("srv!abd")


def test_signed_cookie_sessions_are_refused_for_channel_sessions(db):
    """CHANNEL_SESSION_ENGINE cannot be the signed-cookie engine: a clear error says so."""
    with override_settings(
            CHANNEL_SESSION_ENGINE="django.contrib.sessions.backends.signed_cookies"), \
            pytest.raises(ValueError, match="signed-cookie"):
        WSClient().connect("/ws/counter/")


def test_http_session_comes_from_the_cookie_or_the_query(db):
    """http_session is the browser's session named by its cookie or ?session_key=, and None
    without either."""
    store = SessionStore()
    store["count"] = 7
    store.create()
    client = WSClient()
    client.cookies["sessionid"] = store.session_key
    client.connect("/ws/http-session/")
    assert client.receive() == {"text": "count=7"}
    client = WSClient()
    client.connect(f"/ws/http-session/?session_key={store.session_key}")
    assert client.receive() == {"text": "count=7"}
    client = WSClient()
    client.connect("/ws/http-session/")
    assert client.receive() == {"text": "count=None"}


def test_http_session_user_is_the_logged_in_user(alice):
    """http_session_user gives message.user from the login cookie; AnonymousUser without."""
    client = WSClient()
    assert client.login(username="alice", password="secret-password")
    client.connect("/ws/whoami/")
    assert client.receive() == {"text": "alice"}
    anonymous = WSClient()
    anonymous.connect("/ws/whoami/")
    assert anonymous.receive() == {"text": "anonymous"}


def test_channel_session_user_from_http_carries_the_user_to_later_messages(alice):
    """The login seen on connect (cookies) is kept in the channel session, so later frames
    (no cookies) have the same message.user."""
    client = WSClient()
    client.force_login(alice)
    client.connect("/ws/auth/")
    client.cookies.clear()
    client.send(text="who?")
    assert client.receive() == {"text": "alice"}
    anonymous = WSClient()
    anonymous.connect("/ws/auth/")
    anonymous.send(text="who?")
    assert anonymous.receive() == {"text": "anonymous"}


@pytest.mark.parametrize("origin, accepted", [
    ("http://example.com", True),
    ("https://localhost:8000", True),
    ("http://evil.example.org", False),
    (None, False),
])
def test_allowed_hosts_only_checks_the_origin(origin, accepted):
    """allowed_hosts_only accepts a handshake whose Origin host is in ALLOWED_HOSTS and
    rejects (close) any other, and one without Origin."""
    client = WSClient()
    headers = [("origin", origin)] if origin else []
    reply = client.connect("/ws/origin/", headers=headers, check_accept=False)
    assert reply == ({"accept": True} if accepted else {"close": True})


def test_allowed_hosts_star_allows_any_origin():
    """With '*' in ALLOWED_HOSTS any Origin, or none, may connect."""
    with override_settings(ALLOWED_HOSTS=["*"]):
        assert WSClient().connect("/ws/origin/") == {"accept": True}


def test_class_consumer_channel_session_flag(db):
    """channel_session = True on a class consumer gives every handler its session: the room
    from the connect's route is there on receive."""
    client = WSClient()
    client.connect("/ws/room/lobby/")
    client.send(text="hi")
    assert client.receive() == {"text": "lobby:hi"}


def test_class_consumer_http_user_flag(alice):
    """http_user = True gives message.user on connect (from the cookie) and on later frames
    (from the channel session)."""
    client = WSClient()
    client.force_login(alice)
    client.connect("/ws/who/")
    assert client.receive(json=True) == {"user": "alice"}
    client.cookies.clear()
    client.send(json={"n": 1})
    assert client.receive(json=True) == {"user": "alice", "echo": {"n": 1}}


def test_decorating_a_whole_class_consumer(db):
    """@channel_session on a class consumer wraps all its handlers."""
    client = WSClient()
    client.connect("/ws/decorated/")
    client.send(text="a")
    client.send(text="b")
    assert [client.receive(), client.receive()] == [{"text": "1"}, {"text": "2"}]


def test_decorating_methods_of_a_class_consumer(db):
    """Decorators work on methods, including ones not passed the message (self.message)."""

    class Methods(WebsocketConsumer):
        @channel_session
        def connect(self, message, **kwargs):
            message.channel_session["name"] = "m"
            self.accept()

        @channel_session
        def receive(self, text=None, bytes=None, **kwargs):
            self.send(text=self.message.channel_session["name"] + text)

    with apply_routes([Methods.as_route(path=r"^/m/$")]):
        client = WSClient()
        client.connect("/m/")
        client.send(text="!")
        assert client.receive() == {"text": "m!"}


def test_a_consumer_that_raises_does_not_save_its_session(db):
    """Changes made by a consumer that raised are not saved (like its sends)."""

    @channel_session
    def connect(message):
        message.channel_session["x"] = 1
        raise RuntimeError("no")

    with apply_routes([route("websocket.connect", connect)]):
        client = WSClient()
        with pytest.raises(RuntimeError):
            client.connect("/x/")
    assert not Session.objects.filter(
        session_key=channel_session_key(client.reply_channel)).exists()


class _FlagConsumer(WebsocketConsumer):
    """Answers with the user it sees and whether it has an HTTP session."""

    def connect(self, message, **kwargs):
        self.accept()
        self.report(message)

    def receive(self, text=None, bytes=None, **kwargs):
        self.report(self.message)

    def report(self, message):
        http = getattr(message, "http_session", None)
        self.send(text=f"{message.user.get_username() or 'anonymous'} "
                       f"http={'yes' if http is not None else 'no'}")


def test_class_consumer_http_user_and_session_flag(alice):
    """http_user_and_session = True: on connect message.user and message.http_session come
    from the browser's session; later frames (no cookies) have the user from the channel
    session."""

    class Both(_FlagConsumer):
        http_user_and_session = True

    with apply_routes([Both.as_route(path=r"^/both/$")]):
        client = WSClient()
        client.force_login(alice)
        client.connect("/both/")
        assert client.receive() == {"text": "alice http=yes"}
        client.cookies.clear()
        client.send(text="x")
        assert client.receive() == {"text": "alice http=no"}


def test_class_consumer_channel_session_user_flag(alice):
    """channel_session_user = True: message.user from the channel session only -- the
    browser's login is not looked at, so a logged-in browser is anonymous here."""

    class ChannelOnly(_FlagConsumer):
        channel_session_user = True

    with apply_routes([ChannelOnly.as_route(path=r"^/chan/$")]):
        client = WSClient()
        client.force_login(alice)
        client.connect("/chan/")
        assert client.receive() == {"text": "anonymous http=no"}
