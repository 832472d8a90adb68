"""Direct writes: output leaves in the turn of the reactor that made it.

How this works. Twisted's TCP transport never sends inside ``write``: it keeps
the data, registers the socket for writability (an ``epoll_ctl``), sends on the
reactor's next turn and unregisters (another ``epoll_ctl``). Each reply that
comes back from the channel layer paid that turn and those two system calls
before its first byte left.

``enable(transport)`` gives one plain TCP (or UNIX) transport a ``write`` and
``writeSequence`` that try the socket first while the transport has nothing
buffered: what the kernel takes is sent now, the rest goes to Twisted's buffer
exactly as before. Output order is kept (the socket is only tried when nothing
is queued ahead), and so are producers, ``loseConnection`` flushing and the
output watch, which only ever see what the kernel did not take. A send error
is left for Twisted to find on its own write, which closes the connection the
usual way. Other transports (TLS, a test's ``StringTransport``) are left alone.
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


def enable(transport: Any) -> bool:
    """Make ``transport`` send at once when it can; ``False`` if it is not a plain
    TCP/UNIX transport (then nothing changes)."""
    if not isinstance(transport, tcp.Connection) or transport.TLS:
        return False
    buffered_write = transport.write

    def write(data: bytes) -> None:
        if type(data) is bytes and data and can_write_now(transport):
            try:
                sent = transport.socket.send(data)
            except OSError:  # would block, or an error Twisted's own send will report
                sent = 0
            if sent == len(data):
                return
            data = data[sent:]
        buffered_write(data)

    def write_sequence(chunks: Iterable[bytes]) -> None:
        chunks = list(chunks)
        if chunks and all(type(chunk) is bytes for chunk in chunks):
            write(b"".join(chunks))
        else:
            transport.__class__.writeSequence(transport, chunks)

    transport.write = write
    transport.writeSequence = write_sequence
    return True
