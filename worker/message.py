"""``Message``: one received message, as a consumer sees it."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from asgi_spec import formats
from worker.channels import Channel, Validator


def validate_http_reply(content: Any) -> Any:
    """An HTTP reply is a Response (with ``status``) or a Response Chunk."""
    if formats.is_http_response_start(content):
        return formats.validate_http_response(content)
    return formats.validate_http_response_chunk(content)


#: How replies to messages from each channel are checked before they are sent.
REPLY_VALIDATORS: dict[str, Validator] = {
    formats.HTTP_REQUEST: validate_http_reply,
    formats.HTTP_DISCONNECT: validate_http_reply,
    formats.WEBSOCKET_CONNECT: formats.validate_websocket_reply,
    formats.WEBSOCKET_RECEIVE: formats.validate_websocket_reply,
    formats.WEBSOCKET_DISCONNECT: formats.validate_websocket_reply,
}

#: The key ``ConsumeLater`` requeues count in.
RETRIES_KEY = "__retries__"


class Message(Mapping[str, Any]):
    """A dict-like message: ``message["path"]``, plus ``.content``, ``.channel``,
    ``.reply_channel`` and ``.layer`` (also ``.channel_layer``, the 1.x name).

    ``reply_channel`` is a ``Channel`` (or ``None``) whose sends are checked
    against the reply format of this message's channel, so a bad reply fails
    inside the consumer with an error naming the field.
    """

    def __init__(self, content: dict[str, Any], channel: str, layer: Any) -> None:
        self.content = content
        self.channel = Channel(channel, layer)
        self.layer = layer
        self._reply_channel: Channel | bool | None = False

    @property
    def channel_layer(self) -> Any:
        return self.layer

    @property
    def reply_channel(self) -> Channel | None:
        if self._reply_channel is False:
            name = self.content.get("reply_channel")
            self._reply_channel = None if name is None else Channel(
                name, self.layer, validator=REPLY_VALIDATORS.get(self.channel.name))
        return self._reply_channel  # type: ignore[return-value]

    @property
    def retries(self) -> int:
        """How many times ``ConsumeLater`` already requeued this message."""
        value = self.content.get(RETRIES_KEY, 0)
        return value if isinstance(value, int) else 0

    def __getitem__(self, key: str) -> Any:
        return self.content[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.content[key] = value

    def __iter__(self) -> Iterator[str]:
        return iter(self.content)

    def __len__(self) -> int:
        return len(self.content)

    def copy(self) -> Message:
        """A message with a shallow copy of the content, on the same channel and layer."""
        return Message(dict(self.content), self.channel.name, self.layer)

    def __repr__(self) -> str:
        return f"<Message on {self.channel.name!r} keys={sorted(self.content)}>"
