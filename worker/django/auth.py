"""Auth for consumers: ``message.user`` from a session, and an Origin check.

* ``http_session_user`` -- ``message.user`` from the browser's session
  (``message.http_session``); ``AnonymousUser`` without one.
* ``channel_session_user`` -- ``message.user`` from the channel session.
* ``channel_session_user_from_http`` -- for a connection's first message
  (``websocket.connect``, which carries the cookies): copies the logged-in
  user from the browser's session into the channel session, so that the
  later messages (which carry no cookies) decorated with
  ``channel_session_user`` see the same ``message.user``. Only the three auth
  keys are copied, and only when the browser's session has a user.
* ``allowed_hosts_only`` -- on ``websocket.connect``, rejects (403) a
  handshake whose ``Origin`` host is not in ``ALLOWED_HOSTS`` (with the
  same rules as Django's Host check; ``DEBUG`` with empty ``ALLOWED_HOSTS``
  allows localhost). A handshake without ``Origin`` (not a browser) is
  rejected unless ``ALLOWED_HOSTS`` contains ``"*"``. Other messages pass.

All work on function consumers, methods and class consumers (see
``worker.django.sessions``).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib import auth
from django.http.request import split_domain_port, validate_host

from asgi_spec import formats
from worker.django.sessions import (
    _header,
    channel_session,
    consumer_decorator,
    http_session,
)
from worker.exceptions import DenyConnection

_AUTH_KEYS = (auth.SESSION_KEY, auth.BACKEND_SESSION_KEY, auth.HASH_SESSION_KEY)


def user_from_session(session: Any) -> Any:
    """The user logged in to ``session`` (``AnonymousUser`` when none, or no session)."""
    if session is None:
        from django.contrib.auth.models import AnonymousUser

        return AnonymousUser()
    return auth.get_user(SimpleNamespace(session=session))


def transfer_user(from_session: Any, to_session: Any) -> None:
    """Copy the logged-in user (the auth keys) from one session to another."""
    for key in _AUTH_KEYS:
        if key in from_session:
            to_session[key] = from_session[key]


def _set_user_from_http(message: Any, call: Any) -> Any:
    message.user = user_from_session(message.http_session)
    return call()


def _set_user_from_channel(message: Any, call: Any) -> Any:
    if not hasattr(message, "user"):
        message.user = user_from_session(message.channel_session)
    return call()


def _transfer(message: Any, call: Any) -> Any:
    http = message.http_session
    if http is not None and auth.SESSION_KEY in http:
        transfer_user(http, message.channel_session)
    return call()


def http_session_user(consumer: Any) -> Any:
    """``message.http_session`` and ``message.user`` from it."""
    return http_session(consumer_decorator(_set_user_from_http)(consumer))


def channel_session_user(consumer: Any) -> Any:
    """``message.channel_session`` and ``message.user`` from it."""
    return channel_session(consumer_decorator(_set_user_from_channel)(consumer))


def channel_session_user_from_http(consumer: Any) -> Any:
    """``channel_session_user``, after copying the browser's login into the channel session."""
    inner = consumer_decorator(_set_user_from_channel)(consumer)
    return http_session(channel_session(consumer_decorator(_transfer)(inner)))


def channel_and_http_session_user_from_http(consumer: Any) -> Any:
    """As ``channel_session_user_from_http``; ``message.http_session`` stays available too."""
    return channel_session_user_from_http(consumer)


def allowed_hosts() -> list[str]:
    hosts = list(settings.ALLOWED_HOSTS)
    if settings.DEBUG and not hosts:
        hosts = [".localhost", "127.0.0.1", "[::1]"]
    return hosts


def origin_allowed(origin: bytes | None) -> bool:
    """``True`` if a handshake with this ``Origin`` header value may connect."""
    hosts = allowed_hosts()
    if origin is None:
        return "*" in hosts
    try:
        netloc = urlsplit(origin.decode("latin-1")).netloc
    except ValueError:
        return False
    domain, _port = split_domain_port(netloc.rpartition("@")[2])
    return bool(domain) and validate_host(domain, hosts)


def _check_origin(message: Any, call: Any) -> Any:
    if message.channel.name == formats.WEBSOCKET_CONNECT and not origin_allowed(
            _header(message, b"origin")):
        raise DenyConnection(f"Origin {_header(message, b'origin')!r} is not allowed")
    return call()


allowed_hosts_only = consumer_decorator(_check_origin)
allowed_hosts_only.__doc__ = "Reject WebSocket handshakes from Origins not in ALLOWED_HOSTS."
