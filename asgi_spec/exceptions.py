"""The errors of the channel-layer contract.

Every error a layer raises is a ``ChannelLayerError``. Each message names what
was wrong (the channel, the field, the limit) so that the caller can act on it.
"""

from __future__ import annotations


class ChannelLayerError(Exception):
    """Base class of every error raised by an ``asgi_spec`` layer."""


class ChannelFull(ChannelLayerError):
    """The channel holds ``capacity`` unexpired messages; the send was refused.

    This is backpressure, not failure: the caller decides (503, close 1013,
    retry with backoff). A layer never drops a message silently instead.
    """


class MessageTooLarge(ChannelLayerError):
    """The encoded message is larger than the layer's ``max_message_size``."""


class InvalidChannelName(ChannelLayerError, ValueError):
    """A channel or group name breaks the name grammar (see ``asgi_spec.names``)."""


class InvalidMessage(ChannelLayerError, TypeError):
    """A message holds a value the wire format cannot carry faithfully."""


class MessageFormatError(ChannelLayerError, ValueError):
    """A message does not follow its channel's format (``asgi_spec.formats``).

    ``field`` names the offending key (dotted for nested keys) or is ``None``
    when the message as a whole is wrong.
    """

    def __init__(self, message_type: str, field: str | None, problem: str) -> None:
        self.message_type = message_type
        self.field = field
        self.problem = problem
        where = f"{message_type} field {field!r}" if field else message_type
        super().__init__(f"{where}: {problem}")


class LayerConfigError(ChannelLayerError, ValueError):
    """A layer URL or option is unknown or out of range."""


class LayerUnavailable(ChannelLayerError, ConnectionError):
    """The layer's storage (a Redis server, the SQLite file) cannot be reached.

    Callers treat this as temporary: the interface server answers 503, the
    worker retries with backoff. Messages never include passwords.
    """
