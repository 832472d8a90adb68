"""Small WebSocket frames from clients, unmasked in Python.

Every frame a client sends is masked with a 4-byte key (RFC 6455, 5.3).
Autobahn makes a masker object per frame; for payloads under 128 bytes its
accelerated one (cffi) costs about 7 us to make and run on a 32-byte frame,
most of it crossing into C. ``SmallMasker`` does the same XOR with Python's
integers in about 1.7 us. ``install()`` makes Autobahn's frame parser use it
for frames under ``SMALL`` bytes (larger frames keep Autobahn's masker), by
replacing the ``create_xor_masker`` name in ``autobahn.websocket.protocol``
once per process; the interface server is the only user of Autobahn here.

``lone_frame`` reads the most common read of all, one whole small text or
binary message in one frame, without Autobahn's frame machinery (the
protocol decides when it may: ``ws_protocol``).
"""

from __future__ import annotations

from typing import Any

import autobahn.websocket.protocol as autobahn_protocol

#: Frames shorter than this are unmasked by ``SmallMasker``.
SMALL = 128


class SmallMasker:
    """Autobahn's masker interface (``process``, ``pointer``, ``reset``) for one
    frame's key; ``process`` may be called with the payload in several pieces."""

    __slots__ = ("_done", "_key")

    def __init__(self, key: bytes) -> None:
        self._key = bytes(key)
        self._done = 0

    def pointer(self) -> int:
        """Payload bytes processed so far."""
        return self._done

    def reset(self) -> None:
        self._done = 0

    def process(self, data: bytes) -> bytes:
        """``data`` XOR the key, continuing where the previous piece ended."""
        turn = self._done & 3
        self._done += len(data)
        return _unmask(self._key[turn:] + self._key[:turn], data)


def _unmask(key: bytes, data: bytes) -> bytes:
    size = len(data)
    stream = (key * ((size >> 2) + 1))[:size]
    return (int.from_bytes(data, "little") ^ int.from_bytes(stream, "little")).to_bytes(
        size, "little")


def lone_frame(data: bytes) -> tuple[bool, bytes] | None:
    """``(is_binary, payload)`` when ``data`` is exactly one whole frame that is a
    whole text or binary message -- final, masked, no RSV bit, a payload under 126
    bytes (no extended length) -- with its payload unmasked; else ``None``. Says
    nothing of the payload itself (a text's UTF-8 is the caller's to check)."""
    if len(data) < 6:
        return None
    first, second = data[0], data[1]
    if (first != 0x81 and first != 0x82) or second < 0x80 or second > 0xFD:
        return None  # not FIN + text/binary without RSV; unmasked; extended length
    if len(data) != (second & 0x7F) + 6:
        return None  # a part of a frame, or more than one
    return first == 0x82, _unmask(data[2:6], data[6:])


_original: Any = None


def _create_masker(key: bytes, length: int | None = None) -> Any:
    if length is not None and length < SMALL:
        return SmallMasker(key)
    return _original(key, length)


def install() -> None:
    """Make Autobahn's frame parser unmask small frames with ``SmallMasker``."""
    global _original
    if _original is None:
        _original = autobahn_protocol.create_xor_masker
        autobahn_protocol.create_xor_masker = _create_masker
