"""Tests for ``interface_server.endpoints``: listening endpoints from options."""

from __future__ import annotations

import socket

import pytest
from twisted.internet.endpoints import AdoptedStreamServerEndpoint, serverFromString
from twisted.internet.protocol import ServerFactory
from twisted.internet.testing import MemoryReactor

from interface_server.endpoints import (
    build_endpoints,
    fd_endpoint,
    systemd_fds,
    tcp_endpoint,
    unix_endpoint,
    with_backlog,
)


def listen(description: str) -> MemoryReactor:
    reactor = MemoryReactor()
    serverFromString(reactor, description).listen(ServerFactory())
    return reactor


@pytest.mark.parametrize(("host", "interface"), [("127.0.0.1", "127.0.0.1"), ("::1", "::1"),
                                                 ("[::]", "::"), ("0.0.0.0", "0.0.0.0")])
def test_tcp_endpoint_listens_with_backlog(host: str, interface: str) -> None:
    """Host and port become a TCP listener (IPv6 included) with the given backlog."""
    reactor = listen(tcp_endpoint(host, 8001, 2048))
    [(port, _, backlog, bound)] = reactor.tcpServers
    assert (port, backlog, bound) == (8001, 2048, interface)


def test_unix_endpoint_escapes_the_path() -> None:
    """A UNIX socket path with ':' is escaped and listened on with the backlog."""
    reactor = listen(unix_endpoint("/tmp/a:b.sock", 1024))
    [(address, _, backlog, _, _)] = reactor.unixServers
    assert (address, backlog) == ("/tmp/a:b.sock", 1024)


@pytest.mark.parametrize(("description", "expected"), [
    ("tcp:80", "tcp:80:backlog=2048"),
    ("unix:/tmp/s", "unix:/tmp/s:backlog=2048"),
    ("ssl:443:privateKey=k.pem", "ssl:443:privateKey=k.pem:backlog=2048"),
    ("tcp:80:backlog=10", "tcp:80:backlog=10"),
    ("systemd:domain=INET:index=0", "systemd:domain=INET:index=0"),
])
def test_with_backlog(description: str, expected: str) -> None:
    """Raw -e strings get the backlog unless they set one or cannot take one."""
    assert with_backlog(description, 2048) == expected


def test_raw_endpoint_backlog_applies() -> None:
    """A raw tcp: string from -e listens with the large backlog."""
    [(_, _, backlog, _)] = listen(with_backlog("tcp:8002", 2048)).tcpServers
    assert backlog == 2048


def test_fd_endpoint_adopts_an_inherited_socket() -> None:
    """--fd adopts a listening socket with its family; the fd stays open."""
    with socket.socket(socket.AF_INET6 if socket.has_ipv6 else socket.AF_INET) as sock:
        sock.bind(("::1" if socket.has_ipv6 else "127.0.0.1", 0))
        sock.listen()
        endpoint = fd_endpoint(MemoryReactor(), sock.fileno())
        assert isinstance(endpoint, AdoptedStreamServerEndpoint)
        assert endpoint.addressFamily == sock.family
        assert sock.fileno() >= 0


def test_systemd_fds() -> None:
    """LISTEN_FDS names fds 3.. when LISTEN_PID is ours (or absent)."""
    import os

    assert systemd_fds({"LISTEN_FDS": "2", "LISTEN_PID": str(os.getpid())}) == [3, 4]
    assert systemd_fds({"LISTEN_FDS": "1"}) == [3]
    assert systemd_fds({"LISTEN_FDS": "1", "LISTEN_PID": "1"}) == []
    assert systemd_fds({}) == []


def test_build_endpoints_defaults_to_localhost_8000() -> None:
    """With no listener given, the server listens on 127.0.0.1:8000."""
    assert build_endpoints(MemoryReactor(), host=None, port=None, unix_socket=None, fds=[],
                           raw=[], backlog=2048) == [
        "tcp:port=8000:interface=127.0.0.1:backlog=2048"]


def test_build_endpoints_combines_listeners() -> None:
    """-e, -u and -b/-p listeners are all used together."""
    endpoints = build_endpoints(MemoryReactor(), host="0.0.0.0", port=9000,
                                unix_socket="/tmp/x.sock", fds=[], raw=["tcp:9001"],
                                backlog=1024)
    assert endpoints == ["tcp:9001:backlog=1024", "unix:address=/tmp/x.sock:backlog=1024",
                         "tcp:port=9000:interface=0.0.0.0:backlog=1024"]


def test_build_endpoints_only_unix() -> None:
    """A UNIX socket alone does not also open the default TCP port."""
    endpoints = build_endpoints(MemoryReactor(), host=None, port=None, unix_socket="/tmp/y",
                                fds=[], raw=[], backlog=1024)
    assert endpoints == ["unix:address=/tmp/y:backlog=1024"]
