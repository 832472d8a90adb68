"""Tests for ``interface_server.cli``: options and environment variables become ``Settings``.

``run`` (which installs the reactor and serves) is replaced by a recorder here;
the real command runs in ``test_end_to_end``.
"""

from __future__ import annotations

from typing import Any

import click
import pytest
from click.testing import CliRunner

from asgi_spec import DEFAULT_LAYER_URL
from interface_server import cli

ENV_NAMES = ("PORT", "REDIS_URL", "CHANNEL_LAYER_URL", "LISTEN_FDS", "LISTEN_PID",
             "FORWARDED_ALLOW_IPS")


@pytest.fixture
def invoke(monkeypatch: pytest.MonkeyPatch) -> Any:
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    for name in list(__import__("os").environ):
        if name.startswith("INTERFACESERVER_"):
            monkeypatch.delenv(name)
    seen: list[cli.Settings] = []

    def fake_run(settings: cli.Settings) -> int:
        seen.append(settings)
        return 0

    monkeypatch.setattr(cli, "run", fake_run)

    def call(*args: str, env: dict[str, str] | None = None) -> tuple[Any, cli.Settings | None]:
        result = CliRunner().invoke(cli.main, list(args), env=env)
        return result, (seen.pop() if seen else None)

    return call


def test_defaults(invoke: Any) -> None:
    """With nothing given: the embedded SQLite layer, Daphne's timeouts, access log on."""
    result, settings = invoke()
    assert result.exit_code == 0, result.output
    assert settings.layer == DEFAULT_LAYER_URL
    assert (settings.host, settings.port, settings.fds, settings.endpoints) == (None, None, [],
                                                                               [])
    config = settings.config
    assert (config.http_timeout, config.websocket_connect_timeout, config.ping_interval,
            config.ping_timeout) == (120, 5, 20, 30)
    assert config.access_log and not config.proxy_headers
    assert config.ws_allowed_origins == ("*",)
    assert settings.loop == "auto"


def test_all_options(invoke: Any) -> None:
    """Every option reaches the settings."""
    result, settings = invoke(
        "-b", "0.0.0.0", "-p", "9000", "-u", "/tmp/s.sock", "--fd", "5", "-e", "tcp:9001",
        "-e", "unix:/tmp/other.sock", "--layer", "memory://", "--http-timeout", "7",
        "--websocket-timeout", "60", "--websocket-connect-timeout", "3", "--ping-interval", "4",
        "--ping-timeout", "6", "--header-timeout", "9", "--keep-alive-timeout", "8",
        "--root-path", "/app", "--proxy-headers", "--forwarded-allow-ips", "10.0.0.0/8",
        "--ws-protocol", "chat", "--ws-protocol", "v2", "--max-body-size", "1M",
        "--ws-allowed-origin", "https://*.example.com",
        "--max-ws-message-size", "64K", "--limit-concurrency", "500",
        "--graceful-timeout", "11", "--no-access-log", "--access-log-format", "{status}",
        "--access-log-json", "-v", "2")
    assert result.exit_code == 0, result.output
    assert (settings.host, settings.port, settings.unix_socket, settings.fds) == (
        "0.0.0.0", 9000, "/tmp/s.sock", [5])
    assert settings.endpoints == ["tcp:9001", "unix:/tmp/other.sock"]
    assert (settings.layer, settings.verbosity) == ("memory://", 2)
    c = settings.config
    assert (c.http_timeout, c.websocket_timeout, c.websocket_connect_timeout, c.ping_interval,
            c.ping_timeout, c.header_timeout, c.keep_alive_timeout) == (7, 60, 3, 4, 6, 9, 8)
    assert (c.root_path, c.proxy_headers, c.forwarded_allow_ips) == ("/app", True, "10.0.0.0/8")
    assert c.ws_protocols == ("chat", "v2")
    assert c.ws_allowed_origins == ("https://*.example.com",)
    assert (c.max_body_size, c.max_ws_message_size, c.limit_concurrency) == (2**20, 2**16, 500)
    assert (c.graceful_timeout, c.access_log, c.access_log_format, c.access_log_json) == (
        11, False, "{status}", True)


def test_every_option_is_also_an_environment_variable() -> None:
    """Each option declares an environment variable."""
    for param in cli.main.params:
        if isinstance(param, click.Option) and param.name != "help":
            assert param.envvar, f"--{param.name} has no environment variable"


def test_environment_variables(invoke: Any) -> None:
    """INTERFACESERVER_* variables set options."""
    result, settings = invoke(env={"INTERFACESERVER_HTTP_TIMEOUT": "9",
                                   "INTERFACESERVER_PROXY_HEADERS": "true",
                                   "INTERFACESERVER_WS_PROTOCOL": "a b",
                                   "INTERFACESERVER_MAX_BODY_SIZE": "0"})
    assert result.exit_code == 0, result.output
    c = settings.config
    assert (c.http_timeout, c.proxy_headers, c.ws_protocols, c.max_body_size) == (
        9, True, ("a", "b"), None)


def test_platform_port_binds_all_interfaces(invoke: Any) -> None:
    """$PORT (Heroku and friends) sets the port and listens on 0.0.0.0."""
    _, settings = invoke(env={"PORT": "5123"})
    assert (settings.host, settings.port) == ("0.0.0.0", 5123)
    _, settings = invoke("-b", "127.0.0.1", env={"PORT": "5123"})
    assert (settings.host, settings.port) == ("127.0.0.1", 5123)
    _, settings = invoke(env={"INTERFACESERVER_PORT": "5124"})
    assert (settings.host, settings.port) == (None, 5124)


@pytest.mark.parametrize(("env", "args", "layer"), [
    ({"REDIS_URL": "redis://r:6379/0"}, (), "redis://r:6379/0"),
    ({"REDIS_URL": "redis://r:6379/0", "CHANNEL_LAYER_URL": "sqlite:///x.db"}, (),
     "sqlite:///x.db"),
    ({"CHANNEL_LAYER_URL": "sqlite:///x.db"}, ("--layer", "myproject.layers:layer"),
     "myproject.layers:layer"),
])
def test_layer_choice(invoke: Any, env: dict[str, str], args: tuple[str, ...],
                      layer: str) -> None:
    """--layer, then CHANNEL_LAYER_URL, then REDIS_URL, then the embedded default."""
    _, settings = invoke(*args, env=env)
    assert settings.layer == layer


def test_systemd_socket_activation(invoke: Any) -> None:
    """With no listener option, systemd's LISTEN_FDS sockets are used."""
    _, settings = invoke(env={"LISTEN_FDS": "2"})
    assert settings.fds == [3, 4]
    _, settings = invoke("-p", "8000", env={"LISTEN_FDS": "2"})
    assert settings.fds == []


@pytest.mark.parametrize(("args", "message"), [
    (("--max-body-size", "lots"), "not a size"),
    (("--root-path", "app"), "root_path"),
    (("--http-timeout", "0"), "http_timeout"),
    (("--forwarded-allow-ips", "10.0.0.999"), "10.0.0.999"),
    (("--access-log-format", "{nope}"), "unknown field"),
    (("-p", "70000"), "70000"),
    (("-e", "nonsense:1"), "nonsense"),
    (("-e", "tcp:notaport"), "tcp:notaport"),
    (("--loop", "tokio"), "'tokio' is not one of 'auto', 'asyncio', 'uvloop'"),
])
def test_bad_options_are_usage_errors(invoke: Any, args: tuple[str, ...], message: str) -> None:
    """A bad value exits 2 with a message naming it; the server is not started."""
    result, settings = invoke(*args)
    assert result.exit_code == 2
    assert message in result.output
    assert settings is None


def test_loop_uvloop_without_uvloop_is_a_usage_error(invoke: Any,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """--loop uvloop where uvloop cannot be imported exits 2 saying so; auto falls back."""
    import sys

    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop now raises ImportError
    result, settings = invoke("--loop", "uvloop")
    assert result.exit_code == 2
    assert "--loop uvloop, but uvloop cannot be imported" in result.output
    assert settings is None
    result, settings = invoke(env={"INTERFACESERVER_LOOP": "auto"})
    assert result.exit_code == 0, result.output
    assert settings.loop == "auto"
    result, settings = invoke("--loop", "asyncio")
    assert settings.loop == "asyncio"


@pytest.mark.parametrize(("text", "size"), [("1048576", 2**20), ("512K", 2**19),
                                            ("10M", 10 * 2**20), ("1g", 2**30), ("2KiB", 2048),
                                            ("0", 0)])
def test_size_values(text: str, size: int) -> None:
    """Sizes take plain bytes or K/M/G (binary) suffixes."""
    assert cli.Size().convert(text, None, None) == size


def test_help_lists_environment_variables(invoke: Any) -> None:
    """--help shows the options and their environment variables."""
    result, _ = invoke("--help")
    assert result.exit_code == 0
    assert "--forwarded-allow-ips" in result.output
    assert "INTERFACESERVER_HTTP_TIMEOUT" in result.output
    assert "CHANNEL_LAYER_URL" in result.output


def test_importing_the_command_imports_no_worker_django_or_reactor() -> None:
    """The server never imports the worker or Django, and importing it installs no reactor
    (the command must install the asyncio reactor first)."""
    import subprocess
    import sys

    code = ("import sys, interface_server.cli, interface_server.server; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('worker', 'django')]; "
            "bad += ['twisted.internet.reactor'] if 'twisted.internet.reactor' in sys.modules "
            "else []; print(bad)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, check=True)
    assert result.stdout.strip() == "[]"


@pytest.mark.filterwarnings("ignore:Passing pyOpenSSL:DeprecationWarning")
def test_tls_options_are_loaded_and_checked(invoke: Any, tmp_path: Any) -> None:
    """--ssl-certfile/--ssl-keyfile/--ssl-ca-certs (or their variables) are read and
    checked before the server starts; the settings carry the loaded files."""
    from tests.interface_server.certificates import TestCA

    ca = TestCA(tmp_path)
    issued = ca.issue()
    result, settings = invoke("--ssl-keyfile", str(issued.key), "--ssl-certfile",
                              str(issued.cert), "--ssl-ca-certs", str(ca.path))
    assert result.exit_code == 0, result.output
    assert settings.tls is not None
    assert (settings.tls.keyfile, settings.tls.certfile) == (issued.key, issued.cert)
    assert len(settings.tls.ca_certs) == 1
    result, settings = invoke(env={"INTERFACESERVER_SSL_KEYFILE": str(issued.key),
                                   "INTERFACESERVER_SSL_CERTFILE": str(issued.cert)})
    assert result.exit_code == 0, result.output
    assert settings.tls is not None and settings.tls.ca_certs == ()
    _, settings = invoke()
    assert settings.tls is None


def test_bad_tls_files_are_usage_errors(invoke: Any, tmp_path: Any) -> None:
    """A missing file, a key that is not a key, a key of another certificate, or one
    option without the other: exit 2 with a message naming the option and the problem."""
    from tests.interface_server.certificates import TestCA

    ca = TestCA(tmp_path)
    one, other = ca.issue("one"), ca.issue("other")
    junk = tmp_path / "junk.pem"
    junk.write_text("junk\n")
    cases = [
        (("--ssl-keyfile", str(tmp_path / "nope.key"), "--ssl-certfile", str(one.cert)),
         ["--ssl-keyfile", "does not exist"]),
        (("--ssl-keyfile", str(junk), "--ssl-certfile", str(one.cert)),
         ["--ssl-keyfile", "holds no PEM private key"]),
        (("--ssl-keyfile", str(other.key), "--ssl-certfile", str(one.cert)),
         ["--ssl-keyfile", "does not match the certificate"]),
        (("--ssl-keyfile", str(one.key)), ["give both"]),
        (("--ssl-ca-certs", str(ca.path)), ["--ssl-ca-certs needs"]),
    ]
    for args, messages in cases:
        result, settings = invoke(*args)
        assert result.exit_code == 2, (args, result.output)
        for message in messages:
            assert message in result.output, (args, result.output)
        assert settings is None
