"""Throwaway ``redis-server`` processes for tests.

How this works: ``RedisServer.start()`` picks a free TCP port on 127.0.0.1,
runs ``redis-server`` on it with persistence off and its working directory in
a private temporary directory, and waits until the server answers ``PING``.
``stop()`` terminates that one process by its PID; ``start()`` again brings a
fresh (empty) server back on the same port, which is what reconnect tests
need. Tests never touch a shared server on 6379 and never use fakeredis.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path

#: How long ``start`` waits for the first PONG before giving up.
START_TIMEOUT = 10.0


class RedisServerError(RuntimeError):
    """``redis-server`` is missing or did not start; the message says why."""


_prefixes = itertools.count()


def fresh_prefix(tag: str = "t") -> str:
    """A Redis key prefix no other test uses (and no other prefix starts with)."""
    return f"sbtest:{tag}{next(_prefixes)}:"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ping(port: int, password: str | None = None, tls: bool = False) -> bool:
    """``True`` if a Redis server on ``port`` answers PING (raw RESP, no client library)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as raw:
            sock = raw
            if tls:
                context = ssl.create_default_context()
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
                sock = context.wrap_socket(raw)
            if password:
                sock.sendall(f"AUTH {password}\r\n".encode())
                if not sock.recv(64).startswith(b"+OK"):
                    return False
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One ``redis-server`` process that this test run owns (or a Sentinel, given
    ``sentinel_config``: the path of a writable sentinel.conf; or TLS-only, given
    ``tls``: certificate, key and CA files). ``extra_args`` go on its command line
    last, e.g. ``("--replicaof", "127.0.0.1", "6379")`` for a replica."""

    def __init__(self, port: int | None = None, password: str | None = None,
                 sentinel_config: Path | None = None,
                 tls: tuple[Path, Path, Path] | None = None,
                 extra_args: tuple[str, ...] = ()) -> None:
        self.port = port or free_port()
        self.extra_args = tuple(extra_args)
        self.password = password
        self.sentinel_config = sentinel_config
        self.tls = tls  # (certificate, key, CA certificate): TLS only, on ``port``
        self.process: subprocess.Popen[bytes] | None = None
        self._dir = Path(tempfile.mkdtemp(prefix="switchboard-redis-"))

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://{auth}127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> RedisServer:
        """Start the server (again, on the same port) and wait for PONG."""
        if self.running:
            return self
        binary = shutil.which("redis-server")
        if binary is None:
            raise RedisServerError(
                "redis-server is not installed: install it (apt-get install redis-server) "
                "to run the Redis layer tests"
            )
        if self.sentinel_config is not None:
            # Sentinel mode: a writable config file (Sentinel rewrites it) and its port.
            args = [binary, str(self.sentinel_config), "--sentinel", "--port", str(self.port),
                    "--daemonize", "no", "--loglevel", "warning"]
        else:
            args = [binary, "--port", str(self.port), "--bind", "127.0.0.1",
                    "--save", "", "--appendonly", "no", "--dir", str(self._dir),
                    "--daemonize", "no", "--loglevel", "warning"]
        if self.tls is not None:
            cert, key, ca = self.tls
            args[args.index("--port") + 1] = "0"
            args += ["--tls-port", str(self.port), "--tls-cert-file", str(cert),
                     "--tls-key-file", str(key), "--tls-ca-cert-file", str(ca),
                     "--tls-auth-clients", "no"]
        if self.password:
            args += ["--requirepass", self.password]
        args += list(self.extra_args)
        log = open(self._dir / "redis.log", "ab")  # noqa: SIM115 - handed to the child
        try:
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                            cwd=self._dir)
        finally:
            log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            if _ping(self.port, self.password, tls=self.tls is not None):
                return self
            time.sleep(0.02)
        output = (self._dir / "redis.log").read_text(errors="replace")[-2000:]
        self.stop()
        raise RedisServerError(
            f"redis-server did not answer PING on port {self.port} within "
            f"{START_TIMEOUT} s; its log ends with:\n{output}"
        )

    def stop(self) -> None:
        """Stop this server by its PID (SIGTERM, then SIGKILL) and wait for it."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(5)

    def cleanup(self) -> None:
        """Stop the server and remove its directory."""
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


def make_tls_files(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 signed by it:
    ``(certificate, key, CA certificate)`` written under ``directory``."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    lifetime = (now - datetime.timedelta(days=1), now + datetime.timedelta(days=2))

    def build(subject: str, key: ec.EllipticCurvePrivateKey, issuer: str,
              signer: ec.EllipticCurvePrivateKey, ca: bool) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(lifetime[0])
            .not_valid_after(lifetime[1])
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
        return builder.sign(signer, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = build("switchboard test CA", ca_key, "switchboard test CA", ca_key, True)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = build("127.0.0.1", key, "switchboard test CA", ca_key, False)
    paths = (directory / "server.crt", directory / "server.key", directory / "ca.crt")
    paths[0].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    paths[2].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    return paths
