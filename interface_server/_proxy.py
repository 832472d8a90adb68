"""Proxy headers: who the client really is, believed only from trusted proxies.

``X-Forwarded-For``, ``X-Forwarded-Proto`` and ``X-Forwarded-Port`` are set by
a reverse proxy (nginx, Heroku's router). Any client can send them too, so they
are applied only when the connection comes from an address in
``--forwarded-allow-ips`` (IPs and CIDR networks, or ``*`` for any). A
connection over a UNIX socket counts as trusted: only local processes can make
one, and the usual one is the proxy in front.

``X-Forwarded-For`` is read right to left: each trusted proxy appends the
address it saw, so the first untrusted address from the right is the client
(if every entry is trusted, the leftmost is). A forwarded client has port 0:
the proxy does not say which port the client used.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

Address = tuple[str, int]
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_SCHEMES = {"http", "https", "ws", "wss"}


class TrustedProxies:
    """A set of trusted proxy addresses: IPs, CIDR networks, or ``*``."""

    def __init__(self, spec: str | Iterable[str]) -> None:
        entries = spec.split(",") if isinstance(spec, str) else list(spec)
        self.any = False
        self.networks: list[IPNetwork] = []
        for raw in entries:
            entry = raw.strip()
            if not entry:
                continue
            if entry == "*":
                self.any = True
                continue
            try:
                self.networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                raise ValueError(
                    f"forwarded-allow-ips entry {entry!r} is not an IP address, a CIDR "
                    "network (10.0.0.0/8) or '*'"
                ) from None

    def trusts(self, host: str | None) -> bool:
        """``True`` if a connection from ``host`` may set X-Forwarded-* headers.

        ``None`` is a UNIX-socket peer (trusted, see the module docstring).
        """
        if self.any or host is None:
            return True
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)

    def __repr__(self) -> str:
        entries = ["*"] if self.any else [str(n) for n in self.networks]
        return f"TrustedProxies({','.join(entries)!r})"


def _values(headers: Sequence[Sequence[bytes]], name: bytes) -> list[str]:
    """Comma-separated entries of every ``name`` header, in order, as str."""
    found: list[str] = []
    for header, value in headers:
        if header == name:
            text = value.decode("latin-1")
            found.extend(part.strip() for part in text.split(",") if part.strip())
    return found


def forwarded_client(entries: Sequence[str], trusted: TrustedProxies) -> str | None:
    """The client address from X-Forwarded-For entries (see the module docstring)."""
    for entry in reversed(entries):
        host = _strip_port(entry)
        if not trusted.trusts(host):
            return host
    return _strip_port(entries[0]) if entries else None


def _strip_port(entry: str) -> str:
    """``"[::1]:80"`` -> ``"::1"``, ``"1.2.3.4:80"`` -> ``"1.2.3.4"``."""
    if entry.startswith("["):
        return entry[1:].split("]", 1)[0]
    if entry.count(":") == 1:
        return entry.split(":", 1)[0]
    return entry


def apply_proxy_headers(
    headers: Sequence[Sequence[bytes]],
    client: Address | None,
    server: Address | None,
    scheme: str,
    trusted: TrustedProxies,
) -> tuple[Address | None, Address | None, str]:
    """``(client, server, scheme)`` after X-Forwarded-* headers, if the peer is trusted.

    ``headers`` are lower-cased ``[name, value]`` pairs. ``scheme`` is the
    connection's own (``http``/``https``, or ``ws``/``wss`` for WebSockets);
    a forwarded proto keeps that family. Invalid forwarded values are ignored.
    """
    if not trusted.trusts(client[0] if client else None):
        return client, server, scheme
    forwarded_for = _values(headers, b"x-forwarded-for")
    if forwarded_for:
        host = forwarded_client(forwarded_for, trusted)
        if host:
            client = (host, 0)
    protos = _values(headers, b"x-forwarded-proto")
    if protos and protos[0].lower() in _SCHEMES:
        secure = protos[0].lower() in ("https", "wss")
        websocket = scheme in ("ws", "wss")
        scheme = ("wss" if secure else "ws") if websocket else ("https" if secure else "http")
    ports = _values(headers, b"x-forwarded-port")
    if ports and ports[0].isdigit() and int(ports[0]) <= 65535:
        server = (server[0] if server else "", int(ports[0]))
    return client, server, scheme
