"""Output a client has not read yet: when it means the client is not keeping up.

Replies arrive from the channel layer as fast as workers make them, and the
layer has no way to slow one connection's worker down. A client that does not
read (a slow-read attack, or a ping flood whose pongs are never read) would
make the server buffer without limit. So each connection's unsent output is
watched (``OutputWatch``):

* past ``--max-output-buffer`` at two sweeps in a row (it did not drain for a
  whole sweep interval), the connection is cut. A client that reads is never
  cut for a burst: a batch of replies is written before the transport gets a
  chance to send any of it;
* past ``HARD_FACTOR`` times that, it is cut at once, on the write, so memory
  stays bounded however fast the worker streams;
* a connection that is closing but cannot flush (its client stopped reading)
  is aborted ``CLOSE_LINGER`` seconds after the close began.

``pending_output`` reads Twisted's transport buffer (``dataBuffer`` past
``offset``, plus the not yet joined ``_tempDataBuffer``, plus what a reply
burst holds back, ``_direct_write.held_bytes``); through a wrapping
transport (TLS) it reads the wrapped one, and a test's ``StringTransport``
counts everything written to it.
"""

from __future__ import annotations

from typing import Any

from interface_server._direct_write import held_bytes

#: Unsent output past this many times the limit cuts a connection on the write.
HARD_FACTOR = 4
#: Seconds a closing connection may take to flush before it is aborted.
CLOSE_LINGER = 10.0


def pending_output(transport: Any) -> int:
    """Bytes written to ``transport`` and not yet sent (0 when it cannot tell)."""
    for _ in range(4):  # a wrapped transport (TLS) sits on another one
        if transport is None:
            return 0
        if hasattr(transport, "dataBuffer"):
            return (len(transport.dataBuffer) - getattr(transport, "offset", 0)
                    + getattr(transport, "_tempDataLen", 0) + held_bytes(transport))
        io = getattr(transport, "io", None)  # twisted.internet.testing.StringTransport
        if io is not None and hasattr(io, "tell"):
            return int(io.tell())
        transport = getattr(transport, "transport", None)
    return 0


def over_output_limit(transport: Any, limit: int) -> bool:
    """``True`` when ``transport`` holds more than ``limit`` unsent bytes."""
    return pending_output(transport) > limit


class OutputWatch:
    """One connection's unsent output, judged on writes and at each sweep."""

    __slots__ = ("_over", "closing_since", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._over = False  # over the limit at the last sweep
        self.closing_since: float | None = None

    def cut_on_write(self, transport: Any) -> bool:
        """``True`` when the output just written leaves far too much unsent."""
        return pending_output(transport) > HARD_FACTOR * self.limit

    def cut_on_sweep(self, transport: Any) -> bool:
        """``True`` when the output stayed over the limit since the previous sweep."""
        over = pending_output(transport) > self.limit
        cut, self._over = over and self._over, over
        return cut

    def linger_over(self, closing: bool, now: float) -> bool:
        """``True`` when a close began ``CLOSE_LINGER`` seconds ago and is not done."""
        if not closing:
            self.closing_since = None
            return False
        if self.closing_since is None:
            self.closing_since = now
        return now - self.closing_since >= CLOSE_LINGER
