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


def _layer_for(explicit: Any, what: object) -> Any:
    """``explicit``, else the running consumer's layer; ``what`` (its ``repr`` is
    only made for the error) names the caller."""
    if explicit is not None:
        return explicit
    outbox = current_outbox()
    if outbox is None:
        raise RuntimeError(f"{_name(what)} has no layer: pass layer=... or use it inside a "
                           "consumer")
    return outbox.layer


def _name(what: object) -> str:
    return what if isinstance(what, str) else repr(what)


def _check_content(content: object, what: object) -> dict[str, Any]:
    if not isinstance(content, dict):
        raise TypeError(f"{_name(what)}.send() takes a dict, got {type(content).__name__}")
    return content


#: Channel names already validated (validation depends on the name alone), so the
#: names a worker sees again (its own channels, a socket's reply channel) are
#: checked once; emptied when full, so unique names cannot make it grow.
_VALID_NAMES: dict[str, str] = {}
_VALID_NAMES_MAX = 4096


def _valid_channel_name(name: str) -> str:
    if name.__class__ is str and name in _VALID_NAMES:
        return name
    names.validate_channel_name(name)
    if len(_VALID_NAMES) >= _VALID_NAMES_MAX:
        _VALID_NAMES.clear()
    _VALID_NAMES[name] = name
    return name


class Channel:
    """A channel by name. ``validator`` checks what is sent (replies use one)."""

    def __init__(self, name: str, layer: Any = None, *,
                 validator: Validator | None = None) -> None:
        self.name = _valid_channel_name(name)
        self.layer = layer
        self.validator = validator

    def send(self, content: dict[str, Any], immediately: bool = False) -> None:
        """Send ``content`` now, or when the running consumer returns.

        Raises ``MessageFormatError`` (naming the field) when ``content`` breaks
        the format of this channel or of this kind of reply.
        """
        content = _check_content(content, self)
        if self.validator is not None:
            self.validator(content)
        else:
            formats.validate_message(self.name, content)
        outbox = current_outbox()
        layer = self.layer if self.layer is not None else _layer_for(None, self)
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
        layer = _layer_for(self.layer, self)
        before_immediate()
        layer.group_add(self.name, _channel_name(channel))

    def discard(self, channel: Channel | str, immediately: bool = True) -> None:
        """Remove ``channel``; a non-member is no error.

        Now by default; with ``immediately=False`` inside a consumer, when its held
        sends are flushed (after the ones made before this call), so that a
        consumer that raises leaves the membership as it was.
        """
        layer = _layer_for(self.layer, self)
        outbox = current_outbox()
        if immediately or outbox is None:
            before_immediate()
            layer.group_discard(self.name, _channel_name(channel))
        else:
            outbox.hold("discard", layer, self.name, {"channel": _channel_name(channel)})

    def send(self, content: dict[str, Any], immediately: bool = False) -> None:
        """Send ``content`` to every member now, or when the running consumer returns."""
        content = _check_content(content, self)
        outbox = current_outbox()
        layer = _layer_for(self.layer, self)
        if immediately or outbox is None:
            before_immediate()
            layer.send_group(self.name, content)
        else:
            outbox.hold("group", layer, self.name, dict(content))

    def __repr__(self) -> str:
        return f"Group({self.name!r})"
