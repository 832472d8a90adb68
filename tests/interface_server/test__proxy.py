"""Tests for ``interface_server._proxy``: X-Forwarded-* believed only from trusted peers."""

from __future__ import annotations

import pytest

from interface_server._proxy import TrustedProxies, apply_proxy_headers, forwarded_client


@pytest.mark.parametrize(("spec", "host", "trusted"), [
    ("127.0.0.1", "127.0.0.1", True),
    ("127.0.0.1", "127.0.0.2", False),
    ("10.0.0.0/8", "10.200.1.1", True),
    ("10.0.0.0/8", "11.0.0.1", False),
    ("::1", "::1", True),
    ("fd00::/8", "fd12::1", True),
    ("127.0.0.1", "::ffff:127.0.0.1", True),
    ("*", "8.8.8.8", True),
    ("127.0.0.1, 10.0.0.0/8", "10.1.2.3", True),
    ("127.0.0.1", "not-an-ip", False),
    ("", "127.0.0.1", False),
    ("127.0.0.1", None, True),
])
def test_trusts(spec: str, host: str | None, trusted: bool) -> None:
    """IPs and CIDR networks are trusted; UNIX-socket peers (None) are local, so trusted."""
    assert TrustedProxies(spec).trusts(host) is trusted


def test_invalid_entry_names_it() -> None:
    """A bad --forwarded-allow-ips entry is an error naming it."""
    with pytest.raises(ValueError, match=r"'10\.0\.0\.300'"):
        TrustedProxies("127.0.0.1,10.0.0.300")


def test_forwarded_client_walks_from_the_right() -> None:
    """The first untrusted address from the right is the client."""
    trusted = TrustedProxies("10.0.0.0/8")
    assert forwarded_client(["1.1.1.1", "2.2.2.2", "10.0.0.5"], trusted) == "2.2.2.2"
    assert forwarded_client(["10.0.0.9", "10.0.0.5"], trusted) == "10.0.0.9"
    assert forwarded_client(["[2001:db8::1]:4711", "1.2.3.4:80"], trusted) == "1.2.3.4"


HEADERS = [[b"x-forwarded-for", b"203.0.113.7, 127.0.0.1"], [b"x-forwarded-proto", b"https"],
           [b"x-forwarded-port", b"443"]]


def test_applied_from_a_trusted_peer() -> None:
    """A trusted proxy's headers set client (port 0), scheme and server port."""
    got = apply_proxy_headers(HEADERS, ("127.0.0.1", 5000), ("127.0.0.1", 8000), "http",
                              TrustedProxies("127.0.0.1"))
    assert got == (("203.0.113.7", 0), ("127.0.0.1", 443), "https")


def test_ignored_from_an_untrusted_peer() -> None:
    """Anyone else's X-Forwarded-* headers change nothing."""
    got = apply_proxy_headers(HEADERS, ("198.51.100.1", 5000), ("127.0.0.1", 8000), "http",
                              TrustedProxies("127.0.0.1"))
    assert got == (("198.51.100.1", 5000), ("127.0.0.1", 8000), "http")


@pytest.mark.parametrize(("proto", "scheme", "result"), [
    (b"https", "ws", "wss"), (b"http", "wss", "ws"), (b"HTTPS", "http", "https"),
    (b"gopher", "http", "http"), (b"https, http", "http", "https"),
])
def test_forwarded_proto(proto: bytes, scheme: str, result: str) -> None:
    """The proto keeps the scheme family (ws/wss for WebSockets); junk is ignored."""
    got = apply_proxy_headers([[b"x-forwarded-proto", proto]], ("127.0.0.1", 1), None, scheme,
                              TrustedProxies("*"))
    assert got[2] == result


@pytest.mark.parametrize("port", [b"http", b"99999", b"-1"])
def test_bad_forwarded_port_is_ignored(port: bytes) -> None:
    """A forwarded port that is not 0..65535 is ignored."""
    got = apply_proxy_headers([[b"x-forwarded-port", port]], ("127.0.0.1", 1),
                              ("127.0.0.1", 8000), "http", TrustedProxies("*"))
    assert got[1] == ("127.0.0.1", 8000)
