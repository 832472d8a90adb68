"""Listening endpoints from CLI options: host/port, UNIX socket, inherited fds, raw strings.

Everything becomes a Twisted server endpoint. TCP and UNIX endpoints get a
listen backlog of ``backlog`` (Twisted's default of 50 made a burst of 2,000
connects take 30 s); raw ``-e`` strings get it too unless they name their own.
Inherited sockets (``--fd``, systemd's ``LISTEN_FDS``) keep the backlog their
creator gave them. With ``--ssl-certfile``/``--ssl-keyfile`` the TCP, UNIX and
fd listeners speak TLS (``tls.TLSServerEndpoint``); ``-e ssl:...`` strings
keep their own certificate. Both offer HTTP/2 by ALPN (see ``tls``).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping, Sequence
from typing import Any

from twisted.internet.endpoints import AdoptedStreamServerEndpoint, serverFromString

from interface_server.tls import TLSServerEndpoint

_BACKLOG_TYPES = {"tcp", "tcp6", "unix", "ssl"}
SYSTEMD_FIRST_FD = 3


def _escape(value: str) -> str:
    """Escape ``\\``, ``:`` and ``=`` for a Twisted endpoint description."""
    return value.replace("\\", "\\\\").replace(":", "\\:").replace("=", "\\=")


def tcp_endpoint(host: str, port: int, backlog: int) -> str:
    """``tcp:`` (or ``tcp6:`` for an IPv6 host) endpoint string."""
    host = host.strip("[]")
    kind = "tcp6" if ":" in host else "tcp"
    return f"{kind}:port={port}:interface={_escape(host)}:backlog={backlog}"


def unix_endpoint(path: str, backlog: int) -> str:
    return f"unix:address={_escape(path)}:backlog={backlog}"


def with_backlog(description: str, backlog: int) -> str:
    """``description`` with ``:backlog=N`` added for TCP/UNIX/SSL types that lack one."""
    kind = description.split(":", 1)[0].strip().lower()
    params = description.split(":")[1:]
    if kind in _BACKLOG_TYPES and not any(p.startswith("backlog=") for p in params):
        return f"{description}:backlog={backlog}"
    return description


def fd_endpoint(reactor: Any, fd: int) -> AdoptedStreamServerEndpoint:
    """An endpoint for an inherited listening socket (its family is detected)."""
    probe = socket.socket(fileno=fd)
    try:
        family = probe.family
    finally:
        probe.detach()  # the fd stays open and ours
    return AdoptedStreamServerEndpoint(reactor, fd, family)


def systemd_fds(environ: Mapping[str, str]) -> list[int]:
    """File descriptors passed by systemd socket activation (``LISTEN_FDS``), if for us."""
    count = environ.get("LISTEN_FDS", "")
    pid = environ.get("LISTEN_PID")
    if not count.isdigit() or (pid is not None and pid != str(os.getpid())):
        return []
    return list(range(SYSTEMD_FIRST_FD, SYSTEMD_FIRST_FD + int(count)))


def build_endpoints(
    reactor: Any,
    *,
    host: str | None,
    port: int | None,
    unix_socket: str | None,
    fds: Sequence[int],
    raw: Sequence[str],
    backlog: int,
    tls: Any = None,
) -> list[Any]:
    """Endpoints (strings or endpoint objects) for the given options.

    ``host``/``port`` give a TCP endpoint when either is set, or when nothing
    else is. ``tls`` (a context factory, from ``--ssl-certfile``) makes the
    TCP, UNIX and fd listeners speak TLS; raw strings are used as written.
    """
    endpoints: list[Any] = [with_backlog(description, backlog) for description in raw]
    own: list[Any] = []
    if unix_socket:
        own.append(unix_endpoint(unix_socket, backlog))
    own.extend(fd_endpoint(reactor, fd) for fd in fds)
    if host is not None or port is not None or not (endpoints or own):
        own.append(tcp_endpoint(host or "127.0.0.1", 8000 if port is None else port, backlog))
    if tls is not None:
        own = [TLSServerEndpoint(serverFromString(reactor, e) if isinstance(e, str) else e, tls)
               for e in own]
    return endpoints + own
