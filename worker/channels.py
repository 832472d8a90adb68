"""``Channel`` and ``Group``: named destinations a consumer sends to.

Inside a consumer, sends are held by the running consumer's outbox and
flushed when it returns (see ``worker.outbox``); ``immediately=True`` sends at
once and lets the layer's errors (``ChannelFull``) reach the caller. Outside a
consumer every send is immediate.

A ``Channel`` or ``Group`` made without ``layer=`` uses the layer of the
consumer that is running; outside a consumer it needs an explicit layer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from asgi_spec import formats, names
from worker.outbox import before_immediate, current_outbox

Validator = Callable[[Any], Any]


def _layer_for(explicit: Any, what: str) -> Any:
    if explicit is not None:
        return explicit
    outbox = current_outbox()
    if outbox is None:
        raise RuntimeError(f"{what} has no layer: pass layer=... or use it inside a consumer")
    return outbox.layer


def _check_content(content: object, what: str) -> dict[str, Any]:
    if not isinstance(content, dict):
        raise TypeError(f"{what}.send() takes a dict, got {type(content).__name__}")
    return content


class Channel:
    """A channel by name. ``validator`` checks what is sent (replies use one)."""

    def __init__(self, name: str, layer: Any = None, *,
                 validator: Validator | None = None) -> None:
        self.name = names.validate_channel_name(name)
        self.layer = layer
        self.validator = validator

    def send(self, content: dict[str, Any], immediately: bool = False) -> None:
        """Send ``content`` now, or when the running consumer returns.

        Raises ``MessageFormatError`` (naming the field) when ``content`` breaks
        the format of this channel or of this kind of reply.
        """
        content = _check_content(content, repr(self))
        if self.validator is not None:
            self.validator(content)
        else:
            formats.validate_message(self.name, content)
        outbox = current_outbox()
        layer = self.layer if self.layer is not None else _layer_for(None, repr(self))
        if immediately or outbox is None:
            before_immediate()
            layer.send(self.name, content)
        else:
            outbox.hold("channel", layer, self.name, dict(content))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Channel) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"Channel({self.name!r})"


def _channel_name(channel: Channel | str) -> str:
    return channel.name if isinstance(channel, Channel) else channel


class Group:
    """A named set of channels; ``send`` reaches every member (full ones miss it)."""

    def __init__(self, name: str, layer: Any = None) -> None:
        self.name = names.validate_group_name(name)
        self.layer = layer

    def add(self, channel: Channel | str) -> None:
        """Make ``channel`` a member now (not held until the consumer returns)."""
        layer = _layer_for(self.layer, repr(self))
        before_immediate()
        layer.group_add(self.name, _channel_name(channel))

    def discard(self, channel: Channel | str, immediately: bool = True) -> None:
        """Remove ``channel``; a non-member is no error.

        Now by default; with ``immediately=False`` inside a consumer, when its held
        sends are flushed (after the ones made before this call), so that a
        consumer that raises leaves the membership as it was.
        """
        layer = _layer_for(self.layer, repr(self))
        outbox = current_outbox()
        if immediately or outbox is None:
            before_immediate()
            layer.group_discard(self.name, _channel_name(channel))
        else:
            outbox.hold("discard", layer, self.name, {"channel": _channel_name(channel)})

    def send(self, content: dict[str, Any], immediately: bool = False) -> None:
        """Send ``content`` to every member now, or when the running consumer returns."""
        content = _check_content(content, repr(self))
        outbox = current_outbox()
        layer = _layer_for(self.layer, repr(self))
        if immediately or outbox is None:
            before_immediate()
            layer.send_group(self.name, content)
        else:
            outbox.hold("group", layer, self.name, dict(content))

    def __repr__(self) -> str:
        return f"Group({self.name!r})"
