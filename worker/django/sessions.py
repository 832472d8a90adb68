"""Session decorators for consumers: ``channel_session``, ``http_session`` and friends.

How this works:

* ``channel_session`` gives ``message.channel_session``, a Django session
  store keyed on the message's reply channel (``"chn"`` + 29 hex characters
  of its SHA-1), so every message of one WebSocket sees the same session.
  It is loaded before the consumer runs and saved after it returns, *only if
  the consumer changed it* -- a connection that never writes its session
  never creates a row (1.x created one per connection). On
  ``websocket.disconnect`` the session is deleted, so sessions do not pile
  up in the database; a connection that dies without a disconnect leaves a
  session that expires after ``CHANNEL_SESSION_EXPIRY`` seconds (default
  86400, the WebSocket lifetime) and is removed by ``manage.py
  clearsessions``. The engine is ``CHANNEL_SESSION_ENGINE`` (default
  ``SESSION_ENGINE``); signed-cookie sessions cannot work (no cookie) and are
  refused.
* ``http_session`` gives ``message.http_session``: the Django session named
  by the ``session_key`` query parameter or the session cookie of the
  message's headers (``websocket.connect``, ``http.request``), or ``None``.
  It is read-only: it is never saved.

Every decorator works on a function consumer ``f(message, **kwargs)``, on a
method ``f(self, message, **kwargs)`` (or a method of a class consumer that
is not passed the message, such as ``receive(self, text=...)``: it uses
``self.message``) and on a class consumer itself (its ``dispatch`` is
wrapped). Nested or repeated decorators load the session once.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
from importlib import import_module
from typing import Any
from urllib.parse import parse_qs

from django.conf import settings
from django.contrib.sessions.backends.base import CreateError
from django.http.cookie import parse_cookie

from asgi_spec import formats
from worker.message import Message

SIGNED_COOKIES = "django.contrib.sessions.backends.signed_cookies"


def find_message(args: tuple[Any, ...]) -> Any:
    """The ``Message`` among a consumer's positional arguments (or ``self.message``)."""
    for arg in args[:2]:
        if isinstance(arg, Message):
            return arg
    if args and isinstance(getattr(args[0], "message", None), Message):
        return args[0].message
    raise TypeError("a session/auth decorator needs a consumer taking a Message (as its "
                    "first argument, or after self), or a class consumer with self.message")


def consumer_decorator(wrap: Any) -> Any:
    """Turn ``wrap(message, call)`` into a decorator for functions, methods and classes."""

    def decorator(consumer: Any) -> Any:
        if inspect.isclass(consumer):
            consumer.dispatch = decorator(consumer.dispatch)
            return consumer

        @functools.wraps(consumer)
        def inner(*args: Any, **kwargs: Any) -> Any:
            message = find_message(args)
            return wrap(message, lambda: consumer(*args, **kwargs))

        return inner

    functools.update_wrapper(decorator, wrap)
    return decorator


def session_engine(channel: bool = True) -> Any:
    """The session engine module (``CHANNEL_SESSION_ENGINE`` for channel sessions)."""
    path = settings.SESSION_ENGINE
    if channel:
        path = getattr(settings, "CHANNEL_SESSION_ENGINE", None) or path
        if path == SIGNED_COOKIES:
            raise ValueError(
                "channel_session cannot use the signed-cookie session engine (there is no "
                "cookie to keep it in); set CHANNEL_SESSION_ENGINE to another engine, e.g. "
                "'django.contrib.sessions.backends.db'")
    return import_module(path)


def channel_session_key(reply_channel: str) -> str:
    """The session key of a reply channel: 32 characters, like a normal session key."""
    return "chn" + hashlib.sha1(reply_channel.encode("utf-8")).hexdigest()[:29]


def open_channel_session(reply_channel: str) -> Any:
    """The (loaded) session of ``reply_channel``; empty and unsaved when it is new."""
    key = channel_session_key(reply_channel)
    session = session_engine().SessionStore(session_key=key)
    session.keys()  # load now: a missing session clears the store's key
    session._switchboard_key = key
    return session


def save_channel_session(session: Any) -> None:
    """Save ``session`` under its reply channel's key, creating it if needed."""
    if "_session_expiry" not in session:
        session.set_expiry(getattr(settings, "CHANNEL_SESSION_EXPIRY", 86400))
    if session.session_key is None:
        session._session_key = session._switchboard_key
        try:
            session.save(must_create=True)
            return
        except CreateError:  # another message created it first: update it instead
            pass
    session.save()


def _channel_session(message: Any, call: Any) -> Any:
    if getattr(message, "channel_session", None) is not None:
        return call()  # an outer decorator owns it
    reply_channel = message.get("reply_channel")
    if not isinstance(reply_channel, str):
        raise ValueError(f"channel_session needs a reply_channel; the message on "
                         f"{message.channel.name!r} has none")
    session = open_channel_session(reply_channel)
    message.channel_session = session
    result = call()
    if message.channel.name == formats.WEBSOCKET_DISCONNECT:
        if session.session_key is not None:
            session.delete()
    elif session.modified and (session.session_key is not None or not session.is_empty()):
        save_channel_session(session)
    return result


channel_session = consumer_decorator(_channel_session)
channel_session.__doc__ = "Give ``message.channel_session``, kept per reply channel."


def _header(message: Any, name: bytes) -> bytes | None:
    for key, value in message.get("headers") or ():
        if key.lower() == name:
            return value
    return None


def http_session_key(message: Any) -> str | None:
    """The session key from ``?session_key=`` or the session cookie, if any."""
    query = message.get("query_string") or b""
    if isinstance(query, bytes):
        query = query.decode("latin-1")
    from_query = parse_qs(query).get("session_key")
    if from_query:
        return from_query[0]
    cookie = _header(message, b"cookie")
    if cookie is None:
        return None
    return parse_cookie(cookie.decode("latin-1")).get(settings.SESSION_COOKIE_NAME)


def _http_session(message: Any, call: Any) -> Any:
    if not hasattr(message, "http_session"):
        key = http_session_key(message)
        message.http_session = (None if key is None
                                else session_engine(channel=False).SessionStore(session_key=key))
    return call()


http_session = consumer_decorator(_http_session)
http_session.__doc__ = "Give ``message.http_session``: the browser's session, or ``None``."


def channel_and_http_session(consumer: Any) -> Any:
    """Both ``message.channel_session`` and ``message.http_session``."""
    return http_session(channel_session(consumer))


def __getattr__(name: str) -> Any:
    # ``enforce_ordering`` lives in ``worker.django.ordering`` (which imports this module);
    # 1.x code imports it from the sessions module.
    if name == "enforce_ordering":
        from worker.django.ordering import enforce_ordering

        return enforce_ordering
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
