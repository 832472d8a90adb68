"""Direct writes: a real TCP transport on a socket pair, a memory reactor for the fd set.

What is claimed: while nothing is buffered a write reaches the peer's socket at
once, without registering the transport for writability; what the kernel does
not take is buffered by Twisted as before, and later writes queue behind it so
the peer reads everything in order.
"""

from __future__ import annotations

import socket

import pytest
from twisted.internet import tcp
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactor, StringTransport

from interface_server import _direct_write as direct_write


class _Port:
    """Just enough of a listening port for ``tcp.Server`` (its repr)."""

    _realPortNumber = 0

    def _getLogPrefix(self, protocol: object) -> str:
        return "test"


@pytest.fixture
def pair():
    ours, peer = socket.socketpair()
    ours.setblocking(False)
    peer.setblocking(False)
    reactor = MemoryReactor()
    transport = tcp.Server(ours, Protocol(), ("127.0.0.1", 1), _Port(), 1, reactor)
    yield transport, peer, reactor
    ours.close()
    peer.close()


def _read_all(peer: socket.socket) -> bytes:
    chunks = []
    while True:
        try:
            chunk = peer.recv(1 << 20)
        except BlockingIOError:
            return b"".join(chunks)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def test_a_write_with_nothing_buffered_is_sent_at_once(pair):
    transport, peer, reactor = pair
    assert direct_write.enable(transport)
    transport.write(b"hello ")
    transport.writeSequence([b"wor", b"ld"])
    assert _read_all(peer) == b"hello world"
    assert transport not in reactor.getWriters()  # no writability registration


def test_what_the_kernel_refuses_is_buffered_and_order_is_kept(pair):
    transport, peer, reactor = pair
    direct_write.enable(transport)
    big = bytes(range(256)) * 40_000  # ~10 MB: more than a socket buffer takes
    transport.write(big)
    assert transport in reactor.getWriters()  # the rest waits for the reactor
    assert not direct_write.can_write_now(transport)
    transport.write(b"after")  # queued behind the rest, never sent ahead of it
    received = b""
    for _ in range(10_000):
        received += _read_all(peer)
        if transport not in reactor.getWriters():
            break
        transport.doWrite()
    received += _read_all(peer)
    assert received == big + b"after"


def test_a_closing_transport_writes_through_twisted(pair):
    transport, peer, reactor = pair
    direct_write.enable(transport)
    transport.disconnecting = True  # as after loseConnection with output pending
    transport.write(b"late")
    assert _read_all(peer) == b""
    assert transport in reactor.getWriters()


def test_enabling_costs_no_memory_per_connection(pair):
    """The transport changes class; nothing is stored on the instance."""
    transport, _peer, _reactor = pair
    before = dict(vars(transport))
    assert direct_write.enable(transport)
    assert direct_write.enable(transport)  # twice is once
    assert vars(transport) == before
    assert isinstance(transport, tcp.Server)


def test_other_transports_are_left_alone():
    transport = StringTransport()
    write = transport.write
    assert not direct_write.enable(transport)
    assert transport.write == write


def test_corked_writes_leave_together_at_uncork(pair):
    transport, peer, reactor = pair
    direct_write.enable(transport)
    assert direct_write.cork()
    transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
    transport.writeSequence([b"hel", b"lo"])
    assert _read_all(peer) == b""  # nothing sent yet
    assert direct_write.held_bytes(transport) == 24
    assert not direct_write.cork()  # already corked: the outer holder uncorks
    transport.write(b"!")
    direct_write.uncork()
    assert direct_write.held_bytes(transport) == 0
    assert _read_all(peer) == b"HTTP/1.1 200 OK\r\n\r\nhello!"
    assert transport not in reactor.getWriters()


def test_a_connection_closed_while_corked_still_sends_what_it_was_given(pair):
    transport, peer, reactor = pair
    direct_write.enable(transport)
    direct_write.cork()
    transport.write(b"last words")
    transport.loseConnection()
    direct_write.uncork()
    assert transport.disconnecting
    assert transport in reactor.getWriters()  # buffered by Twisted, flushed before close
    transport.doWrite()
    assert _read_all(peer) == b"last words"
