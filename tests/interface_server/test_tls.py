"""Tests for ``interface_server.tls``: the TLS files checked at startup, contexts and ALPN.

Handshakes here run in memory: the server side is Twisted's own TLS protocol
(``TLSMemoryBIOFactory``, as the listeners use it) on a ``StringTransport``,
the client side Python's ``ssl`` module on a ``MemoryBIO``, and the test
moves the bytes between them. No sockets, no reactor, no waiting.
"""

from __future__ import annotations

import datetime
import ssl
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IProtocolNegotiationFactory
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.internet.testing import MemoryReactor, StringTransport
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from interface_server.endpoints import build_endpoints
from interface_server.tls import (
    TLSFileError,
    TLSServerEndpoint,
    alpn_protocols,
    context_factory,
    load_tls_files,
)
from tests.interface_server.certificates import TestCA, key_pem

#: Twisted's CertificateOptions hands pyOpenSSL the X509/PKey objects it documents,
#: which pyOpenSSL now calls deprecated (production hides DeprecationWarning anyway).
pytestmark = pytest.mark.filterwarnings("ignore:Passing pyOpenSSL:DeprecationWarning")


@pytest.fixture
def ca(tmp_path: Path) -> TestCA:
    return TestCA(tmp_path)


class Recorder(Protocol):
    lost: Any = None

    def connectionLost(self, reason: Any = None) -> None:
        self.lost = reason


@implementer(IProtocolNegotiationFactory)
class Negotiating(ServerFactory):
    """Offers ``alpn_protocols()`` by ALPN, as the server's HTTP factory does."""

    protocol = Recorder

    def acceptableProtocols(self) -> list[bytes]:
        return list(alpn_protocols())


class Handshake:
    """One TLS connection to ``context`` (a Twisted context factory), in memory."""

    def __init__(self, context: Any, client_context: ssl.SSLContext,
                 factory: ServerFactory | None = None) -> None:
        tls_factory = TLSMemoryBIOFactory(context, False, factory or Negotiating())
        self.server = tls_factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
        self.wire = StringTransport()
        self.server.makeConnection(self.wire)
        self.app = self.server.wrappedProtocol
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.client = client_context.wrap_bio(self.incoming, self.outgoing,
                                              server_hostname="localhost")

    def run(self) -> ssl.SSLObject:
        """Shuttle bytes until the client's handshake is done; raises the client's error.

        Then the client's last flight is delivered too: with TLS 1.3 the server
        judges a client certificate only after the client has finished.
        """
        for _ in range(10):
            try:
                self.client.do_handshake()
                break
            except ssl.SSLWantReadError:
                self.pump()
        else:
            raise AssertionError("the handshake did not finish")
        self.pump()
        return self.client

    def pump(self) -> None:
        if self.outgoing.pending:
            self.server.dataReceived(self.outgoing.read())
        self.incoming.write(self.wire.value())
        self.wire.clear()
        if self.wire.disconnecting and self.app.lost is None:
            self.server.connectionLost(Failure(ConnectionDone()))

    @property
    def refused(self) -> Any:
        """Why the server dropped the connection (None while it is up)."""
        return self.app.lost


def server_context(ca: TestCA, **options: Any) -> Any:
    issued = ca.issue()
    return context_factory(load_tls_files(issued.key, issued.cert, **options))


def test_loads_a_key_and_its_certificate(ca: TestCA) -> None:
    """A matching key and certificate load, with no warnings."""
    issued = ca.issue()
    files = load_tls_files(issued.key, issued.cert)
    assert len(files.chain) == 1 and files.ca_certs == () and files.warnings == ()


def test_a_full_chain_file_sends_the_intermediates(ca: TestCA, tmp_path: Path) -> None:
    """A certificate file holding the leaf then its intermediate (fullchain.pem) makes
    the server send both: a client trusting only the root verifies it; without the
    intermediate it cannot."""
    intermediate = ca.intermediate()
    issued = intermediate.issue()
    fullchain = tmp_path / "fullchain.pem"
    fullchain.write_bytes(issued.cert.read_bytes() + intermediate.path.read_bytes())
    files = load_tls_files(issued.key, fullchain)
    assert len(files.chain) == 2
    client = Handshake(context_factory(files), ca.client_context()).run()
    assert client.getpeercert()["subject"] == ((("commonName", "server"),),)
    alone = context_factory(load_tls_files(issued.key, issued.cert))
    with pytest.raises(ssl.SSLCertVerificationError):
        Handshake(alone, ca.client_context()).run()


def test_a_key_that_does_not_match_the_certificate_is_refused(ca: TestCA) -> None:
    """A key from another certificate is an error naming both files."""
    one, other = ca.issue("one"), ca.issue("other")
    with pytest.raises(TLSFileError) as error:
        load_tls_files(other.key, one.cert)
    assert error.value.option == "--ssl-keyfile"
    assert "does not match" in str(error.value)
    assert str(other.key) in str(error.value) and str(one.cert) in str(error.value)


def test_swapped_files_are_named_as_such(ca: TestCA) -> None:
    """Key and certificate given the wrong way round: the error says they look swapped."""
    issued = ca.issue()
    with pytest.raises(TLSFileError, match="swapped"):
        load_tls_files(issued.cert, issued.key)


def test_an_encrypted_key_is_refused_with_a_way_out(ca: TestCA, tmp_path: Path) -> None:
    """A passphrase-protected key is refused, saying how to get an unencrypted one."""
    from cryptography.hazmat.primitives.asymmetric import ec

    issued = ca.issue()
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(key_pem(ec.generate_private_key(ec.SECP256R1()), b"secret"))
    with pytest.raises(TLSFileError, match=r"encrypted private key.*openssl pkey"):
        load_tls_files(encrypted, issued.cert)


@pytest.mark.parametrize(("content", "message"), [
    (b"not a key at all\n", "holds no PEM private key"),
    (b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
     "cannot load the private key"),
])
def test_an_unreadable_key_is_refused(ca: TestCA, tmp_path: Path, content: bytes,
                                      message: str) -> None:
    """A key file that is not a PEM key, or a broken one, is an error naming the file."""
    issued = ca.issue()
    bad = tmp_path / "bad.key"
    bad.write_bytes(content)
    with pytest.raises(TLSFileError, match=message) as error:
        load_tls_files(bad, issued.cert)
    assert error.value.option == "--ssl-keyfile" and str(bad) in str(error.value)


def test_a_missing_file_is_refused(ca: TestCA, tmp_path: Path) -> None:
    """A file that cannot be read is an error saying so."""
    issued = ca.issue()
    with pytest.raises(TLSFileError, match=r"cannot read .*nope\.pem"):
        load_tls_files(issued.key, tmp_path / "nope.pem")


def test_a_ca_file_without_certificates_is_refused(ca: TestCA, tmp_path: Path) -> None:
    """--ssl-ca-certs must hold at least one PEM certificate."""
    issued = ca.issue()
    empty = tmp_path / "empty.pem"
    empty.write_bytes(b"")
    with pytest.raises(TLSFileError) as error:
        load_tls_files(issued.key, issued.cert, empty)
    assert error.value.option == "--ssl-ca-certs"


def test_an_expired_certificate_is_a_warning(ca: TestCA) -> None:
    """An expired certificate still loads (a restart must not fail at night), with a
    warning that clients will refuse it."""
    issued = ca.issue(valid_days=-0.5)
    files = load_tls_files(issued.key, issued.cert)
    assert any("expired" in warning for warning in files.warnings)
    later = load_tls_files(issued.key, issued.cert,
                           now=datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC))
    assert any("not valid before" in warning for warning in later.warnings)


def test_alpn_offers_h2_then_http11(ca: TestCA) -> None:
    """ALPN, as the HTTP factory asks for it: a client offering h2 gets h2; one offering
    only http/1.1 gets that; one offering nothing negotiates nothing (and is served
    HTTP/1.1)."""
    context = server_context(ca)
    assert alpn_protocols() == (b"h2", b"http/1.1")
    for offered, chosen in ((("h2", "http/1.1"), "h2"), (("http/1.1", "h2"), "h2"),
                            (("http/1.1",), "http/1.1"), ((), None)):
        shake = Handshake(context, ca.client_context(offered))
        assert shake.run().selected_alpn_protocol() == chosen
        assert shake.server.negotiatedProtocol == (chosen.encode() if chosen else None)


def test_an_endpoint_string_gets_the_same_alpn_offer(ca: TestCA) -> None:
    """An ``-e ssl:...`` endpoint's context offers h2 too: the offer comes from the
    factory, not from the context."""
    issued = ca.issue()
    reactor = MemoryReactor()
    serverFromString(reactor, f"ssl:8443:privateKey={issued.key}:certKey={issued.cert}"
                     ).listen(Negotiating())
    [(_, _, context, _, _)] = reactor.sslServers
    assert Handshake(context, ca.client_context()).run().selected_alpn_protocol() == "h2"


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_the_context_refuses_tls_below_1_2(ca: TestCA) -> None:
    """TLS 1.0 and 1.1 are refused."""
    old = ca.client_context()
    old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises(ssl.SSLError):
        Handshake(server_context(ca), old).run()


def test_ca_certs_require_a_client_certificate(ca: TestCA, tmp_path: Path) -> None:
    """With --ssl-ca-certs, a client without a certificate is refused and one with a
    certificate from that CA gets in; one from another CA is refused."""
    context = server_context(ca, ca_certs=ca.path)
    shake = Handshake(context, ca.client_context())
    with pytest.raises(ssl.SSLError):
        shake.run().read(1)
    assert shake.refused is not None
    shake = Handshake(context, ca.client_context(client=ca.issue("alice", client=True)))
    shake.run()
    assert shake.refused is None and shake.server.getPeerCertificate() is not None
    stranger = TestCA(tmp_path, "Other CA").issue("mallory", client=True)
    shake = Handshake(context, ca.client_context(client=stranger))
    with pytest.raises(ssl.SSLError):
        shake.run().read(1)
    assert shake.refused is not None


def test_tls_endpoint_wraps_the_factory(ca: TestCA) -> None:
    """``TLSServerEndpoint`` listens on its inner endpoint with a TLS factory around ours."""
    reactor = MemoryReactor()
    context = server_context(ca)
    factory = ServerFactory()
    TLSServerEndpoint(serverFromString(reactor, "tcp:8443"), context).listen(factory)
    [(port, tls_factory, _, _)] = reactor.tcpServers
    assert port == 8443 and isinstance(tls_factory, TLSMemoryBIOFactory)
    assert tls_factory.wrappedFactory is factory


def test_build_endpoints_with_tls(ca: TestCA) -> None:
    """With TLS options the -b/-p and -u listeners listen through TLS; -e strings stay as
    written."""
    context = server_context(ca)
    reactor = MemoryReactor()
    endpoints: list[Any] = build_endpoints(
        reactor, host="127.0.0.1", port=9443, unix_socket="/tmp/tls.sock", fds=[],
        raw=["tcp:9001"], backlog=64, tls=context)
    plain, unix, tcp = endpoints
    assert plain == "tcp:9001:backlog=64"
    factory = ServerFactory()
    unix.listen(factory)
    tcp.listen(factory)
    [(port, tcp_factory, backlog, _)] = reactor.tcpServers
    [(path, unix_factory, _, _, _)] = reactor.unixServers
    assert (port, backlog, path) == (9443, 64, "/tmp/tls.sock")
    for wrapper in (tcp_factory, unix_factory):
        assert isinstance(wrapper, TLSMemoryBIOFactory) and wrapper.wrappedFactory is factory
