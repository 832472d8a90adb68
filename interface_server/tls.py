"""TLS for the interface server: certificate files checked at startup, ALPN for HTTP/2.

How this works.

* ``load_tls_files`` reads ``--ssl-keyfile``, ``--ssl-certfile`` (a leaf
  certificate, optionally followed by its intermediates, as in a
  ``fullchain.pem``) and ``--ssl-ca-certs`` once, at startup, and raises
  ``TLSFileError`` naming the option, the file and the problem: unreadable,
  not PEM, an encrypted key, a key that does not belong to the certificate.
  An expired (or not yet valid) certificate is only a warning.
* ``context_factory`` turns them into Twisted ``CertificateOptions``: TLS 1.2
  or later, and with ``--ssl-ca-certs`` a client certificate signed by one of
  those CAs is required (mutual TLS).
* ``TLSServerEndpoint`` makes any listening endpoint (TCP, UNIX, an inherited
  fd) speak TLS with that context.

ALPN: the server's HTTP factory provides Twisted's
``IProtocolNegotiationFactory`` and answers ``alpn_protocols()`` -- ``h2``
then ``http/1.1`` (``h2`` only when Twisted's HTTP/2 support is importable).
Twisted's TLS layer asks the factory it wraps, so the offer is the same for
these options and for ``-e ssl:...`` endpoint strings. Which protocol a
connection then speaks is decided per connection by ``http_channel`` from the
transport's ``negotiatedProtocol``.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.internet.interfaces import IStreamServerEndpoint
from zope.interface import implementer

HTTP2 = b"h2"
HTTP11 = b"http/1.1"


class TLSFileError(ValueError):
    """A TLS file cannot be used; ``option`` names the command-line option."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(f"{option}: {message}")
        self.option = option
        self.message = message


def http2_available() -> bool:
    """Twisted's HTTP/2 support (``twisted[http2]``, the ``h2`` package) is importable."""
    from twisted.web.http import H2_ENABLED

    return bool(H2_ENABLED)


def alpn_protocols() -> tuple[bytes, ...]:
    """The ALPN protocols offered, in order of preference."""
    return (HTTP2, HTTP11) if http2_available() else (HTTP11,)


@dataclass(frozen=True)
class TLSFiles:
    """The checked contents of the TLS options (``cryptography`` objects)."""

    keyfile: Path
    certfile: Path
    key: Any
    chain: tuple[Any, ...]  # the leaf certificate first, then its intermediates
    ca_certs: tuple[Any, ...] = ()
    warnings: tuple[str, ...] = ()


def _read(option: str, path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TLSFileError(option, f"cannot read {path}: {exc.strerror or exc}") from None


def _certificates(option: str, path: Path, data: bytes) -> list[Any]:
    from cryptography import x509

    if b"-----BEGIN CERTIFICATE-----" not in data:
        hint = (" (it holds a private key: are --ssl-keyfile and --ssl-certfile swapped?)"
                if b"PRIVATE KEY-----" in data else "")
        raise TLSFileError(option, f"{path} holds no PEM certificate{hint}")
    try:
        return list(x509.load_pem_x509_certificates(data))
    except ValueError as exc:
        raise TLSFileError(option, f"{path} is not a valid PEM certificate file: {exc}") \
            from None


def _private_key(option: str, path: Path, data: bytes) -> Any:
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    if b"PRIVATE KEY-----" not in data:
        hint = (" (it holds a certificate: are --ssl-keyfile and --ssl-certfile swapped?)"
                if b"-----BEGIN CERTIFICATE-----" in data else "")
        raise TLSFileError(option, f"{path} holds no PEM private key{hint}")
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise TLSFileError(option, f"{path} holds an encrypted private key; give an "
                           "unencrypted one (e.g. `openssl pkey -in KEY -out KEY.plain`) "
                           "and keep it readable only by the server's user") from None
    except (ValueError, UnsupportedAlgorithm) as exc:  # malformed, or an unknown key type
        raise TLSFileError(option, f"cannot load the private key in {path}: {exc}") from None


def _spki(public_key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return public_key.public_bytes(serialization.Encoding.DER,
                                   serialization.PublicFormat.SubjectPublicKeyInfo)


def _validity_warnings(certificate: Any, path: Path,
                       now: datetime.datetime) -> list[str]:
    if certificate.not_valid_after_utc < now:
        return [f"the certificate in {path} expired on "
                f"{certificate.not_valid_after_utc:%Y-%m-%d %H:%M} UTC; clients will refuse it"]
    if certificate.not_valid_before_utc > now:
        return [f"the certificate in {path} is not valid before "
                f"{certificate.not_valid_before_utc:%Y-%m-%d %H:%M} UTC"]
    return []


def load_tls_files(keyfile: str | Path, certfile: str | Path,
                   ca_certs: str | Path | None = None,
                   now: datetime.datetime | None = None) -> TLSFiles:
    """Read and check the TLS options' files; raises ``TLSFileError``."""
    key_path, cert_path = Path(keyfile), Path(certfile)
    key = _private_key("--ssl-keyfile", key_path, _read("--ssl-keyfile", key_path))
    chain = _certificates("--ssl-certfile", cert_path, _read("--ssl-certfile", cert_path))
    if _spki(key.public_key()) != _spki(chain[0].public_key()):
        raise TLSFileError("--ssl-keyfile", f"the private key in {key_path} does not match "
                           f"the certificate in {cert_path} (the first certificate of that "
                           "file must be the server's own)")
    cas: list[Any] = []
    if ca_certs is not None:
        ca_path = Path(ca_certs)
        cas = _certificates("--ssl-ca-certs", ca_path, _read("--ssl-ca-certs", ca_path))
    now = now or datetime.datetime.now(datetime.UTC)
    files = TLSFiles(key_path, cert_path, key, tuple(chain), tuple(cas),
                     tuple(_validity_warnings(chain[0], cert_path, now)))
    try:
        context_factory(files).getContext()  # let OpenSSL refuse it now, not per connection
    except Exception as exc:
        raise TLSFileError("--ssl-certfile", f"OpenSSL cannot use {cert_path} with "
                           f"{key_path}: {exc}") from None
    return files


def describe(files: TLSFiles) -> str:
    """One line for the log: the certificate, its validity, mutual TLS, ALPN."""
    leaf = files.chain[0]
    mutual = f", client certificates required ({len(files.ca_certs)} CA)" \
        if files.ca_certs else ""
    offered = ", ".join(p.decode() for p in alpn_protocols())
    return (f"certificate {leaf.subject.rfc4514_string()} from {files.certfile}, valid until "
            f"{leaf.not_valid_after_utc:%Y-%m-%d} UTC{mutual}; ALPN offers {offered}")


def context_factory(files: TLSFiles) -> Any:
    """``CertificateOptions`` for ``files``: TLS >= 1.2, client certificates with CAs."""
    from OpenSSL import crypto
    from twisted.internet.ssl import CertificateOptions, TLSVersion

    def x509(certificate: Any) -> Any:
        return crypto.X509.from_cryptography(certificate)

    return CertificateOptions(
        privateKey=crypto.PKey.from_cryptography_key(files.key),
        certificate=x509(files.chain[0]),
        extraCertChain=[x509(c) for c in files.chain[1:]] or None,
        raiseMinimumTo=TLSVersion.TLSv1_2,
        verify=bool(files.ca_certs),
        caCerts=[x509(c) for c in files.ca_certs] or None,
        requireCertificate=bool(files.ca_certs),
    )


@implementer(IStreamServerEndpoint)
class TLSServerEndpoint:
    """Any stream server endpoint, with TLS (``context``) between it and the factory."""

    def __init__(self, inner: Any, context: Any) -> None:
        self.inner = inner
        self.context = context

    def listen(self, factory: Any) -> Any:
        from twisted.protocols.tls import TLSMemoryBIOFactory

        tls_factory = TLSMemoryBIOFactory(self.context, False, factory)
        tls_factory.noisy = False
        return self.inner.listen(tls_factory)
