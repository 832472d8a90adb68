"""The generic consumers with Django session and auth flags (the 1.x attributes).

Set on a class consumer:

* ``channel_session = True`` -- ``message.channel_session`` on every message;
* ``channel_session_user = True`` -- that, plus ``message.user`` from it;
* ``http_user = True`` -- ``message.user`` on every message: on
  ``websocket.connect`` from the browser's session (copied into the channel
  session), on later messages from the channel session;
* ``http_user_and_session = True`` -- as ``http_user``; ``message.http_session``
  is also set on the connect;
* ``strict_ordering = True`` -- the connection's messages run one at a time,
  in ``order`` (``worker.django.ordering.enforce_ordering``, applied outside
  the session decorators).

The flags pick a decorator from ``worker.django.sessions``/``auth`` and wrap
``dispatch`` with it for each message, so the handlers see the attributes.
"""

from __future__ import annotations

from typing import Any, ClassVar

from asgi_spec import formats
from worker import consumers as generic
from worker.django import auth as _auth
from worker.django import sessions as _sessions
from worker.message import Message

__all__ = [
    "BaseConsumer",
    "DjangoConsumerMixin",
    "HttpConsumer",
    "JsonWebsocketConsumer",
    "WebsocketConsumer",
    "WebsocketDemultiplexer",
]

_FIRST_MESSAGES = frozenset({formats.WEBSOCKET_CONNECT, formats.HTTP_REQUEST})


class DjangoConsumerMixin:
    """Applies the session/auth decorators the class flags ask for."""

    channel_session: ClassVar[bool] = False
    channel_session_user: ClassVar[bool] = False
    http_user: ClassVar[bool] = False
    http_user_and_session: ClassVar[bool] = False
    strict_ordering: ClassVar[bool] = False

    def session_decorator(self, message: Message) -> Any:
        """The decorator for this message, or ``None`` when no flag is set."""
        if self.http_user or self.http_user_and_session:
            if message.channel.name in _FIRST_MESSAGES:
                return _auth.channel_session_user_from_http
            return _auth.channel_session_user
        if self.channel_session_user:
            return _auth.channel_session_user
        if self.channel_session:
            return _sessions.channel_session
        return None

    def dispatch(self, message: Message, **kwargs: Any) -> None:
        decorator = self.session_decorator(message)
        run = super().dispatch  # type: ignore[misc]
        if decorator is None and not self.strict_ordering:
            return run(message, **kwargs)

        def call(message: Message, **kwargs: Any) -> None:
            return run(message, **kwargs)

        if decorator is not None:
            call = decorator(call)
        if self.strict_ordering:
            from worker.django.ordering import enforce_ordering

            call = enforce_ordering(call)
        return call(message, **kwargs)


class BaseConsumer(DjangoConsumerMixin, generic.BaseConsumer):
    pass


class WebsocketConsumer(DjangoConsumerMixin, generic.WebsocketConsumer):
    pass


class JsonWebsocketConsumer(DjangoConsumerMixin, generic.JsonWebsocketConsumer):
    pass


class WebsocketDemultiplexer(DjangoConsumerMixin, generic.WebsocketDemultiplexer):
    pass


class HttpConsumer(DjangoConsumerMixin, generic.HttpConsumer):
    pass
