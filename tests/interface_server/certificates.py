"""Test certificates, made by the tests (``cryptography``): a CA, server and client leaves.

``TestCA(tmp_path)`` writes ``ca.pem``; ``issue(name)`` writes ``NAME.key`` and
``NAME.pem`` signed by the CA, valid for ``localhost`` and ``127.0.0.1``, and
returns their paths. ``client_context`` is an ``ssl.SSLContext`` that trusts
the CA and offers the given ALPN protocols. EC P-256 keys: fast to make.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def key_pem(key: ec.EllipticCurvePrivateKey, password: bytes | None = None) -> bytes:
    encryption = (serialization.BestAvailableEncryption(password) if password
                  else serialization.NoEncryption())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             encryption)


def cert_pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


@dataclass
class Issued:
    key: Path
    cert: Path


class TestCA:
    """A throwaway certificate authority writing its files under ``directory``."""

    __test__ = False  # not a pytest test class

    def __init__(self, directory: Path, name: str = "Switchboard Test CA",
                 parent: TestCA | None = None) -> None:
        self.directory = directory
        self.now = datetime.datetime.now(datetime.UTC)
        self.key = ec.generate_private_key(ec.SECP256R1())
        issuer = parent.certificate.subject if parent is not None else _name(name)
        self.certificate = (
            x509.CertificateBuilder().subject_name(_name(name)).issuer_name(issuer)
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(self.now - datetime.timedelta(days=1))
            .not_valid_after(self.now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(parent.key if parent is not None else self.key, hashes.SHA256()))
        self.path = directory / f"{name.lower().replace(' ', '-')}.pem"
        self.path.write_bytes(cert_pem(self.certificate))

    def intermediate(self, name: str = "Switchboard Intermediate CA") -> TestCA:
        """A CA signed by this one (its leaves need it sent along to verify)."""
        return TestCA(self.directory, name, parent=self)

    def issue(self, name: str = "server", *, client: bool = False,
              valid_days: float = 2) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        not_after = self.now + datetime.timedelta(days=valid_days)
        builder = (
            x509.CertificateBuilder().subject_name(_name(name))
            .issuer_name(self.certificate.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(min(self.now - datetime.timedelta(days=1), not_after))
            .not_valid_after(not_after)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False))
        certificate = builder.sign(self.key, hashes.SHA256())
        issued = Issued(self.directory / f"{name}.key", self.directory / f"{name}.pem")
        issued.key.write_bytes(key_pem(key))
        issued.cert.write_bytes(cert_pem(certificate))
        return issued

    def client_context(self, alpn: tuple[str, ...] = ("h2", "http/1.1"),
                       client: Issued | None = None) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.path))
        if alpn:
            context.set_alpn_protocols(list(alpn))
        if client is not None:
            context.load_cert_chain(str(client.cert), str(client.key))
        return context
