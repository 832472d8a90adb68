"""Message values and their wire encoding (msgpack; never pickle).

A message is a dict with str keys whose values are, recursively: bytes, str,
int (signed 64-bit), float, bool, None, list (tuples become lists) or dict with
str keys. Bytes and str stay distinct on the wire. ``encode`` checks all of
this first, so a bad value fails at ``send`` with the path to it, not later in
the process that receives it.
"""

from __future__ import annotations

import threading
from typing import Any

import msgpack

from asgi_spec.exceptions import InvalidMessage, MessageTooLarge

DEFAULT_MAX_MESSAGE_SIZE = 1024 * 1024

_INT_MIN = -(2**63)
_INT_MAX = 2**63 - 1
_SCALARS = (str, bytes, float, bool, type(None))
_local = threading.local()


def _packb(value: Any) -> bytes:
    """``msgpack.packb(value, use_bin_type=True)`` on this thread's own ``Packer``:
    ``packb`` makes a Packer, and its buffer, on every call (~0.6 us, about half of
    encoding a small message). A Packer resets itself after each value, also after
    one it refused."""
    try:
        packer = _local.packer
    except AttributeError:
        packer = _local.packer = msgpack.Packer(use_bin_type=True)
    return packer.pack(value)  # type: ignore[no-any-return]


def _check(value: Any, path: str) -> None:
    kind = type(value)
    if kind in _SCALARS:
        return
    if kind is int:
        if not _INT_MIN <= value <= _INT_MAX:
            raise InvalidMessage(f"{path}: int {value} does not fit in a signed 64-bit integer")
        return
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str:
                raise InvalidMessage(
                    f"{path}: dict keys must be str, found {type(key).__name__} key {key!r}"
                )
            _check(item, f"{path}[{key!r}]")
        return
    if kind is list or kind is tuple:
        for index, item in enumerate(value):
            _check(item, f"{path}[{index}]")
        return
    raise InvalidMessage(
        f"{path}: {kind.__name__} is not a message value type "
        "(allowed: bytes, str, int, float, bool, None, list, dict with str keys)"
    )


def _valid(value: Any) -> bool:
    """Whether ``_check`` would accept ``value`` (the same rules), without building
    the path of every value on the way: the fast answer for the common case."""
    kind = type(value)
    if kind in _SCALARS:
        return True
    if kind is int:
        return _INT_MIN <= value <= _INT_MAX
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str or (type(item) not in _SCALARS and not _valid(item)):
                return False
        return True
    if kind is list or kind is tuple:
        for item in value:  # noqa: SIM110 -- a loop: a generator costs more here
            if type(item) not in _SCALARS and not _valid(item):
                return False
        return True
    return False


def check_message(message: Any) -> None:
    """Raise ``InvalidMessage`` naming the first value the wire cannot carry."""
    if type(message) is not dict:
        raise InvalidMessage(f"message must be a dict, not {type(message).__name__}")
    if not _valid(message):
        _check(message, "message")  # raises, naming the path to the bad value


def encode(message: dict[str, Any], max_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> bytes:
    """Check ``message`` and return its msgpack encoding.

    Raises ``InvalidMessage`` for a bad value and ``MessageTooLarge`` when the
    encoding is longer than ``max_size`` bytes.
    """
    check_message(message)
    data = _packb(message)
    if len(data) > max_size:
        raise MessageTooLarge(
            f"message encodes to {len(data)} bytes; the layer's limit is {max_size} "
            "(stream large payloads in chunks on a '?' channel)"
        )
    return data


def decode(data: bytes) -> dict[str, Any]:
    """The message that ``encode`` turned into ``data``."""
    return msgpack.unpackb(data, raw=False)


def pack(value: Any) -> bytes:
    """msgpack for the layer's own bookkeeping (envelopes, not user messages)."""
    return _packb(value)


def unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False)
