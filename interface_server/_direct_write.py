"""Direct writes: output leaves in the turn of the reactor that made it.

How this works. Twisted's TCP transport never sends inside ``write``: it keeps
the data, registers the socket for writability (an ``epoll_ctl``), sends on the
reactor's next turn and unregisters (another ``epoll_ctl``). Each reply that
comes back from the channel layer paid that turn and those two system calls
before its first byte left.

``enable(transport)`` turns one plain TCP (or UNIX) transport into an instance
of a subclass of its own class whose ``write`` and ``writeSequence`` try the
socket first while the transport has nothing buffered: what the kernel takes
is sent now, the rest goes to Twisted's buffer exactly as before. Changing the
class costs no memory per connection (an idle server holds thousands). Output
order is kept (the socket is only tried when nothing is queued ahead), and so
are producers, ``loseConnection`` flushing and the output watch, which only
ever see what the kernel did not take. A send error is left for Twisted to
find on its own write, which closes the connection the usual way. Other
transports (TLS, a test's ``StringTransport``) are left alone.

Corking: between ``cork()`` and ``uncork()`` (the reply loop around one
burst of replies, the HTTP channel around one read) the writes to such a
transport are held and go out together at ``uncork``, through ``write`` as
above: an HTTP response's head and body, the pongs of a ping flood, several
frames for one WebSocket, leave in one system call. Everything a transport
is given while corked is held, so order is kept; what is held counts as
pending output (``held_bytes``) for the output watch.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from twisted.internet import tcp


def can_write_now(transport: Any) -> bool:
    """True when a write to ``transport`` may go to its socket at once: connected,
    not closing, not TLS, and nothing queued in Twisted's buffer."""
    return (transport.connected and not transport.disconnecting
            and not transport._writeDisconnected and not transport.TLS
            and not transport._tempDataBuffer and transport.offset == len(transport.dataBuffer))


#: While corked: transport -> the chunks held for it (None: not corked).
_held: dict[Any, list[bytes]] | None = None


def cork() -> bool:
    """Start holding direct writes; ``False`` (and nothing changes) if already
    holding: then the caller must not ``uncork``, the outer holder will."""
    global _held
    if _held is not None:
        return False
    _held = {}
    return True


def uncork() -> None:
    """Stop holding: each transport's held writes go out in one write, in order."""
    global _held
    held, _held = _held, None
    for transport, chunks in (held or {}).items():
        transport.write(chunks[0] if len(chunks) == 1 else b"".join(chunks))


def held_bytes(transport: Any) -> int:
    """Bytes held for ``transport`` by the current ``corked`` block."""
    if _held is None:
        return 0
    return sum(map(len, _held.get(transport, ())))


class DirectWrites:
    """The ``write`` and ``writeSequence`` mixed into a plain TCP/UNIX transport."""

    def write(self, data: bytes) -> None:
        if type(data) is not bytes or not data:
            super().write(data)  # type: ignore[misc]  # Twisted's checks and no-ops
            return
        if _held is not None and (self in _held or can_write_now(self)):
            _held.setdefault(self, []).append(data)
            return
        if can_write_now(self):
            try:
                sent = self.socket.send(data)  # type: ignore[attr-defined]
            except OSError:  # would block, or an error Twisted's own send will report
                sent = 0
            if sent == len(data):
                return
            data = data[sent:]
        super().write(data)  # type: ignore[misc]

    def writeSequence(self, chunks: Iterable[bytes]) -> None:
        chunks = list(chunks)
        try:
            data = b"".join(chunks)  # (a str among them raises: Twisted's refusal below)
        except TypeError:
            super().writeSequence(chunks)  # type: ignore[misc]
            return
        self.write(data)


_SUBCLASSES: dict[type, type] = {}


def enable(transport: Any) -> bool:
    """Make ``transport`` send at once when it can; ``False`` if it is not a plain
    TCP/UNIX transport (then nothing changes)."""
    kind = type(transport)
    if issubclass(kind, DirectWrites):
        return True
    if not isinstance(transport, tcp.Connection) or transport.TLS:
        return False
    direct = _SUBCLASSES.get(kind)
    if direct is None:
        direct = _SUBCLASSES[kind] = type(f"Direct{kind.__name__}", (DirectWrites, kind), {})
    transport.__class__ = direct
    return True
