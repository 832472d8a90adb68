"""``interfaceserver``: the command that runs a ``Server``.

``main`` parses options (every one also an environment variable, shown in
``--help``) into ``Settings``; ``run`` installs Twisted's asyncio reactor (on
uvloop where installed: ``event_loop``),
opens and checks the layer (failing fast with the layer's own error text),
starts the server and handles SIGTERM/SIGINT: the first signal drains
(``Server.shutdown``) and exits 0, a second one exits at once.

Layer choice: ``--layer``, else ``CHANNEL_LAYER_URL``, else ``REDIS_URL``,
else the embedded SQLite layer (``asgi_spec.DEFAULT_LAYER_URL``). A layer
may be a URL or an importable object (``module:attr``).

TLS: ``--ssl-certfile``/``--ssl-keyfile`` (and ``--ssl-ca-certs``) are read
and checked while the options are parsed (``check_tls``), so a missing file
or a key of another certificate is a usage error, not a failure on the
first connection; the -b/-p, -u and --fd listeners then speak TLS.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import click

from asgi_spec import DEFAULT_LAYER_URL
from interface_server.config import ServerConfig
from interface_server.event_loop import CHOICES, LoopUnavailable, loop_factory
from interface_server.tls import TLSFileError, TLSFiles, load_tls_files

logger = logging.getLogger("interface_server")

_SIZE = re.compile(r"(?i)^\s*(\d+)\s*([kmg]i?b?|b)?\s*$")
_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
F = TypeVar("F", bound=Callable[..., Any])


class Size(click.ParamType):
    """A byte size: ``1048576``, ``512K``, ``10M``, ``1G`` (binary units)."""

    name = "size"

    def convert(self, value: Any, param: Any, ctx: Any) -> int:
        if isinstance(value, int):
            return value
        match = _SIZE.match(str(value))
        if not match:
            self.fail(f"{value!r} is not a size such as 1048576, 512K or 10M", param, ctx)
        unit = (match.group(2) or "").lower()[:1]
        return int(match.group(1)) * _UNITS[unit]


def option(*decls: str, also_env: tuple[str, ...] = (), **attrs: Any) -> Callable[[F], F]:
    """A ``click.option`` that the environment variable ``INTERFACESERVER_`` + its long
    name (``--http-timeout``: ``INTERFACESERVER_HTTP_TIMEOUT``) also sets, else each of
    ``also_env`` in turn; ``--help`` shows them."""
    long_name = next(decl for decl in decls if decl.startswith("--")).split("/")[0]
    own = "INTERFACESERVER_" + long_name[2:].replace("-", "_").upper()
    envvar = [own, *also_env] if also_env else own
    return click.option(*decls, envvar=envvar, show_envvar=True, **attrs)


def seconds_option(name: str, default: float, help: str) -> Callable[[F], F]:
    """An ``option`` taking a number of seconds (a float), ``default`` when not given."""
    return option(name, type=float, default=default, help=help)


def size_option(name: str, default: str, help: str) -> Callable[[F], F]:
    """An ``option`` taking a byte ``Size``, ``default`` (such as ``"10M"``) when not given."""
    return option(name, type=Size(), default=default, help=help)


@dataclass
class Settings:
    """Everything ``run`` needs, as parsed from the command line and environment."""

    layer: str
    config: ServerConfig
    host: str | None = None
    port: int | None = None
    unix_socket: str | None = None
    fds: list[int] = field(default_factory=list)
    endpoints: list[str] = field(default_factory=list)
    verbosity: int = 1
    ops_port: int | None = None
    ops_bind: str = "127.0.0.1"
    tls: TLSFiles | None = None
    loop: str = "auto"


@click.command(context_settings={"help_option_names": ["-h", "--help"],
                                 "show_default": True, "max_content_width": 100})
@option("-b", "--bind", "host",
        help="Interface to listen on [default: 127.0.0.1, or 0.0.0.0 when $PORT is set].")
@option("-p", "--port", type=click.IntRange(0, 65535), also_env=("PORT",),
        help="TCP port to listen on [default: 8000].")
@option("-u", "--unix-socket", type=click.Path(dir_okay=False),
        help="Listen on this UNIX socket path.")
@option("--fd", "fds", type=int, multiple=True,
        help="Listen on an inherited socket file descriptor (repeatable). systemd's "
        "LISTEN_FDS is used when no listener is given.")
@option("-e", "--endpoint", "endpoints", multiple=True,
        help="A raw Twisted endpoint string, e.g. ssl:443:privateKey=key.pem (repeatable).")
@option("--ssl-certfile", type=click.Path(exists=True, dir_okay=False),
        help="PEM certificate (the server's first, then any intermediates): the -b/-p, -u "
        "and --fd listeners speak TLS (https, wss; HTTP/2 by ALPN). Needs --ssl-keyfile.")
@option("--ssl-keyfile", type=click.Path(exists=True, dir_okay=False),
        help="The unencrypted PEM private key of --ssl-certfile.")
@option("--ssl-ca-certs", type=click.Path(exists=True, dir_okay=False),
        help="PEM CA certificates: require every client to present a certificate signed by "
        "one of them (mutual TLS).")
@option("--layer", also_env=("CHANNEL_LAYER_URL", "REDIS_URL"), default=DEFAULT_LAYER_URL,
        help="Channel layer URL (memory://, sqlite:///..., redis://...) or module:attr.")
@seconds_option("--http-timeout", 120.0,
                "Seconds to wait for a response to start (504 after).")
@seconds_option("--websocket-timeout", 86400.0,
                "Maximum WebSocket lifetime in seconds; 0 or less: unlimited.")
@seconds_option("--websocket-connect-timeout", 5.0,
                "Seconds the application has to accept a WebSocket (403 after).")
@seconds_option("--ping-interval", 20.0,
                "Ping a WebSocket quiet for this many seconds; 0: never.")
@seconds_option("--ping-timeout", 30.0, "Drop a WebSocket whose ping is unanswered this long.")
@seconds_option("--header-timeout", 20.0,
                "Seconds a client may take to send a request head (408 after).")
@seconds_option("--keep-alive-timeout", 20.0, "Seconds an idle keep-alive connection stays open.")
@seconds_option("--body-timeout", 20.0,
                "Seconds a request body may go without a byte arriving (408 after).")
@option("--root-path", default="",
        help="The prefix this server is mounted at (the messages' root_path).")
@option("--proxy-headers/--no-proxy-headers", default=False,
        help="Believe X-Forwarded-For/-Proto/-Port from --forwarded-allow-ips.")
@option("--forwarded-allow-ips", default="127.0.0.1,::1", also_env=("FORWARDED_ALLOW_IPS",),
        help="Comma-separated proxy IPs/CIDRs to trust, or '*'.")
@option("--ws-protocol", "ws_protocols", multiple=True,
        help="A WebSocket subprotocol to agree to when offered (repeatable).")
@option("--ws-allowed-origin", "ws_allowed_origins", multiple=True,
        help="An Origin a WebSocket handshake may come from, e.g. https://*.example.com "
        "(repeatable) [default: any].")
@size_option("--max-body-size", "10M", "Largest request body (413 past it); 0: unlimited.")
@size_option("--max-ws-message-size", "512K",
             "Largest WebSocket message (closed with 1009 past it).")
@size_option("--max-output-buffer", "16M",
             "Unread bytes a client may leave buffered before it is cut off.")
@option("--limit-concurrency", type=click.IntRange(min=1),
        help="Answer 503 past this many open connections.")
@seconds_option("--graceful-timeout", 30.0,
                "Seconds to let in-flight requests finish on SIGTERM.")
@option("--access-log/--no-access-log", default=True,
        help="Write one line per request to stdout.")
@option("--access-log-format",
        help="A str.format template; fields: client, time, iso_time, method, path, "
        "http_version, status, size, referer, user_agent, duration, duration_ms, protocol.")
@option("--access-log-json", is_flag=True, default=False,
        help="Write access-log lines as JSON objects.")
@option("--metrics/--no-metrics", default=False,
        help="Serve Prometheus metrics at --metrics-path.")
@option("--metrics-path", default="/metrics", help="The path of --metrics.")
@option("--health/--no-health", default=False,
        help="Serve liveness at --health-path and readiness (a layer round trip, a live "
        "worker for http.request) at --ready-path.")
@option("--health-path", default="/-/health", help="The liveness path of --health.")
@option("--ready-path", default="/-/ready", help="The readiness path of --health.")
@option("--dashboard/--no-dashboard", default=False,
        help="Serve a live dashboard at --dashboard-path (its JSON feed at PATH.json).")
@option("--dashboard-path", default="/-/dashboard", help="The path of --dashboard.")
@option("--ops-port", type=click.IntRange(0, 65535),
        help="Serve the enabled metrics, health and dashboard on this port only, not on the "
        "application's.")
@option("--ops-bind", default="127.0.0.1", help="The interface --ops-port listens on.")
@option("--ops-interval", type=click.FloatRange(min=0.1), default=2.0,
        help="Seconds between two looks at the layer for --metrics and --dashboard.")
@option("--heartbeat-interval", type=click.FloatRange(min=0.05), default=5.0,
        metavar="SECONDS",
        help="This server beats in the layer's registry five times per interval and is "
        "shown stale within one interval if it stops; it re-reads the live workers at "
        "least every fifth of it. Use the workers' interval.")
@option("--loop", type=click.Choice(CHOICES), default="auto",
        help="The asyncio event loop under Twisted: uvloop (faster), asyncio (the standard "
        "library's), or auto: uvloop when installed.")
@option("-v", "--verbosity", type=click.IntRange(0, 2), default=1,
        help="0: warnings, 1: info, 2: debug.")
@option("--reload", is_flag=True, default=False,
        help="Development: restart the server whenever a .py file under the current "
        "directory changes.")
@click.pass_context
def main(ctx: click.Context, **options: Any) -> None:
    """Serve HTTP and WebSockets, turning them into channel-layer messages.

    Workers (`runworker`) consume the messages and answer on each
    connection's reply channel; this server writes the answers back.
    """
    if options.pop("reload"):
        sys.exit(run_with_reload("INTERFACESERVER_RELOAD"))
    settings = settings_from_options(ctx, options)
    sys.exit(run(settings))


def run_with_reload(flag_envvar: str) -> int:
    """Run this very command again as a child, restarted when a ``.py`` file changes.

    The child is the command line this process was started with, minus
    ``--reload`` (and with ``flag_envvar`` off). SIGTERM stops the watcher and,
    through it, the child, which shuts down gracefully on the SIGINT it gets.
    """
    import shlex
    import signal

    import watchfiles

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    command = [sys.executable, *[arg for arg in sys.orig_argv[1:] if arg != "--reload"]]
    os.environ[flag_envvar] = "false"
    signal.signal(signal.SIGTERM, interrupt)
    watchfiles.run_process(os.getcwd(), target=shlex.join(command), target_type="command",
                           watch_filter=watchfiles.PythonFilter(), sigint_timeout=30)
    return 0


def settings_from_options(ctx: click.Context, options: dict[str, Any]) -> Settings:
    host = options["host"]
    from_platform = (ctx.get_parameter_source("port") is click.core.ParameterSource.ENVIRONMENT
                     and "INTERFACESERVER_PORT" not in os.environ)
    if host is None and from_platform:
        host = "0.0.0.0"  # a platform that sets $PORT routes to us from outside
    try:
        config = ServerConfig(
            http_timeout=options["http_timeout"],
            websocket_timeout=options["websocket_timeout"],
            websocket_connect_timeout=options["websocket_connect_timeout"],
            ping_interval=options["ping_interval"],
            ping_timeout=options["ping_timeout"],
            header_timeout=options["header_timeout"],
            keep_alive_timeout=options["keep_alive_timeout"],
            body_timeout=options["body_timeout"],
            root_path=options["root_path"].rstrip("/"),
            proxy_headers=options["proxy_headers"],
            forwarded_allow_ips=options["forwarded_allow_ips"],
            ws_protocols=tuple(options["ws_protocols"]),
            ws_allowed_origins=tuple(options["ws_allowed_origins"]) or ("*",),
            max_body_size=options["max_body_size"] or None,
            max_ws_message_size=options["max_ws_message_size"],
            max_output_buffer=options["max_output_buffer"],
            limit_concurrency=options["limit_concurrency"],
            graceful_timeout=options["graceful_timeout"],
            access_log=options["access_log"],
            access_log_format=options["access_log_format"],
            access_log_json=options["access_log_json"],
            metrics=options["metrics"], metrics_path=options["metrics_path"],
            health=options["health"], health_path=options["health_path"],
            ready_path=options["ready_path"], dashboard=options["dashboard"],
            dashboard_path=options["dashboard_path"],
            ops_on_app_ports=options["ops_port"] is None, ops_interval=options["ops_interval"],
            heartbeat_interval=options["heartbeat_interval"],
        )
    except ValueError as exc:
        raise click.UsageError(str(exc), ctx) from None
    if options["ops_port"] is not None and not (options["metrics"] or options["health"]
                                                or options["dashboard"]):
        raise click.UsageError("--ops-port serves --metrics, --health and --dashboard: "
                               "enable at least one", ctx)
    for description in options["endpoints"]:
        check_endpoint(ctx, description)
    tls = check_tls(ctx, options["ssl_keyfile"], options["ssl_certfile"],
                    options["ssl_ca_certs"])
    fds = list(options["fds"])
    if not (fds or options["endpoints"] or options["unix_socket"] or host
            or options["port"] is not None):
        from interface_server.endpoints import systemd_fds

        fds = systemd_fds(os.environ)
    return Settings(
        layer=options["layer"], config=config, host=host, port=options["port"],
        unix_socket=options["unix_socket"], fds=fds, endpoints=list(options["endpoints"]),
        verbosity=options["verbosity"], ops_port=options["ops_port"],
        ops_bind=options["ops_bind"], tls=tls, loop=check_loop(ctx, options["loop"]),
    )


def check_loop(ctx: click.Context, choice: str) -> str:
    """``choice`` of ``--loop`` if it can be had, else a usage error naming why."""
    try:
        loop_factory(choice)
    except LoopUnavailable as exc:
        raise click.UsageError(str(exc), ctx) from None
    return choice


def check_endpoint(ctx: click.Context, description: str) -> None:
    """Parse a raw endpoint string now, so a typo is a usage error, not a traceback."""
    from twisted.internet.endpoints import serverFromString

    try:
        serverFromString(None, description)  # parsing needs no reactor
    except Exception as exc:
        raise click.UsageError(f"--endpoint {description!r}: {exc}", ctx) from None


def check_tls(ctx: click.Context, keyfile: str | None, certfile: str | None,
              ca_certs: str | None) -> TLSFiles | None:
    """Load and check the TLS files now, so a bad one is a usage error at startup."""
    if keyfile is None and certfile is None:
        if ca_certs is not None:
            raise click.UsageError("--ssl-ca-certs needs --ssl-certfile and --ssl-keyfile", ctx)
        return None
    if keyfile is None or certfile is None:
        raise click.UsageError("--ssl-certfile and --ssl-keyfile go together: give both", ctx)
    try:
        return load_tls_files(keyfile, certfile, ca_certs)
    except TLSFileError as exc:
        raise click.BadParameter(exc.message, ctx, param_hint=f"'{exc.option}'") from None


def configure_logging(verbosity: int) -> None:
    level = {0: logging.WARNING, 1: logging.INFO, 2: logging.DEBUG}[verbosity]
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    access = logging.getLogger("interface_server.access")
    access.propagate = False
    access.setLevel(logging.INFO)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    access.addHandler(handler)

    import txaio
    from twisted.logger import STDLibLogObserver, globalLogBeginner

    txaio.set_global_log_level("debug" if verbosity >= 2 else "warn")
    globalLogBeginner.beginLoggingTo([STDLibLogObserver()], redirectStandardIO=False)


#: Seconds after a first SIGINT/SIGTERM during which another one is the same request
#: (a terminal's Ctrl-C reaches the whole process group, then honcho or systemd sends
#: SIGTERM), not the "exit at once" of a second, deliberate signal.
SIGNAL_ECHO = 1.0


def run(settings: Settings) -> int:
    """Run the server until a signal; return the exit status."""
    import asyncio

    from twisted.internet import asyncioreactor

    loop_name, new_loop = loop_factory(settings.loop)
    loop = new_loop()
    asyncio.set_event_loop(loop)
    asyncioreactor.install(loop)
    from twisted.internet import reactor

    from asgi_spec import ChannelLayerError, load_layer
    from interface_server.endpoints import build_endpoints
    from interface_server.server import Server
    from interface_server.tls import context_factory, describe

    configure_logging(settings.verbosity)
    logger.debug("event loop: %s", loop_name)
    if settings.tls is not None:
        logger.info("TLS on the -b/-p, -u and --fd listeners: %s", describe(settings.tls))
    for warning in settings.tls.warnings if settings.tls is not None else ():
        logger.warning("TLS: %s", warning)
    try:
        layer = load_layer(settings.layer)
        layer.check()
    except ChannelLayerError as exc:
        click.echo(f"interfaceserver: cannot use the channel layer: {exc}", err=True)
        return 1
    try:
        endpoints = build_endpoints(
            reactor, host=settings.host, port=settings.port, unix_socket=settings.unix_socket,
            fds=settings.fds, raw=settings.endpoints, backlog=settings.config.backlog,
            tls=context_factory(settings.tls) if settings.tls is not None else None)
    except OSError as exc:
        click.echo(f"interfaceserver: cannot use an inherited socket: {exc}", err=True)
        return 1
    server = Server(layer, endpoints, reactor=reactor, config=settings.config)
    status: dict[str, Any] = {"code": 0, "first_signal_at": None}

    def started_failed(failure: Any) -> None:
        error = getattr(failure.value, "subFailure", failure).value
        click.echo(f"interfaceserver: cannot listen: {error}", err=True)
        status["code"] = 1
        server.shutdown().addBoth(lambda _: reactor.stop())

    def on_signal(name: str) -> None:
        first_at, now = status["first_signal_at"], time.monotonic()
        if first_at is not None:
            if now - first_at < SIGNAL_ECHO:  # Ctrl-C's SIGINT, then the manager's SIGTERM
                logger.info("%s: already shutting down", name)
                return
            logger.warning("second %s: exiting now", name)
            logging.shutdown()
            os._exit(1)
        status["first_signal_at"] = now
        logger.info("%s: shutting down (send it again to exit at once)", name)
        server.shutdown().addBoth(lambda _: reactor.stop())

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signal.Signals(signum).name)
    def start() -> None:
        server.start().addErrback(started_failed)
        if settings.ops_port is not None and server.ops is not None:
            from twisted.internet.endpoints import serverFromString

            from interface_server.endpoints import tcp_endpoint

            endpoint = serverFromString(reactor, tcp_endpoint(settings.ops_bind,
                                                              settings.ops_port, 128))
            server.ops.listen(endpoint).addCallbacks(
                lambda port: logger.info("operations endpoints on %s:%d",
                                         settings.ops_bind, port.getHost().port),
                started_failed)

    reactor.callWhenRunning(start)
    reactor.run(installSignalHandlers=False)
    layer.close()
    return status["code"]
