"""``manage.py runserver``: interface server + worker threads + the layer, in one process.

This module is the one place in ``worker`` that imports ``interface_server``
(and Twisted): the development server runs both halves of Switchboard in one
process, so nothing else has to. Production runs ``interfaceserver`` and
``manage.py runworker`` as separate processes.

How this works (``inner_run``, called by Django's ``runserver`` machinery, so
``--noreload``, the address/port argument, ``--ipv6``, the system checks, the
migrations warning and the autoreloader work as with Django's own server):

1. the layer is ``CHANNEL_LAYERS["default"]`` -- usually ``memory://``, which
   is right here because everything is in this process; a shared layer
   (SQLite, Redis) works too and lets outside workers help;
2. a ``Worker`` runs ``--workers`` threads (default 4) over the alias's
   routing, behind a static-files route when static files are served
   (``DEBUG`` or ``--insecure``, unless ``--nostatic``);
3. ``interface_server.server.Server`` runs on Twisted's asyncio reactor in
   this thread, listening on the address and port;
4. every exchange is logged in the 1.x style, with the client's address and
   port: ``HTTP GET / 200 [0.02, 127.0.0.1:54321]``, ``WebSocket CONNECT
   /ws/ [127.0.0.1:54322]``, ``WebSocket DISCONNECT /ws/ [127.0.0.1:54322]``
   (colored by status, as Django's server does);
5. Ctrl-C (or SIGTERM) stops the server (WebSockets closed, requests given
   two seconds), then the worker. A code change restarts the process
   (Django's autoreloader), as with Django's server.

``--noasgi`` runs Django's own WSGI development server instead and
``--noworker`` starts no worker threads (run ``manage.py runworker``
against a shared layer).
"""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import sys
import threading
from datetime import datetime
from typing import Any

import django
from django.apps import apps
from django.conf import settings
from django.core.management.base import CommandError
from django.utils import autoreload

from worker.django.layers import get_channel_layer
from worker.django.routing import DjangoRouter
from worker.worker import Worker

if apps.is_installed("django.contrib.staticfiles"):
    from django.contrib.staticfiles.management.commands.runserver import (
        Command as DjangoRunserver,
    )
else:
    from django.core.management.commands.runserver import Command as DjangoRunserver


def _status_style(style: Any, status: int) -> Any:
    if status < 200:
        return style.HTTP_INFO
    if status < 300:
        return style.HTTP_SUCCESS
    if status == 304:
        return style.HTTP_NOT_MODIFIED
    if status < 400:
        return style.HTTP_REDIRECT
    if status == 404:
        return style.HTTP_NOT_FOUND
    if status < 500:
        return style.HTTP_BAD_REQUEST
    return style.HTTP_SERVER_ERROR


def client_text(host: Any, port: Any = None) -> str:
    """``127.0.0.1:54321`` (``[::1]:54321`` for IPv6); the host alone without a port."""
    if not host:
        return "-"
    host = str(host)
    if port is None:
        return host
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def access_line(record: Any) -> str:
    """The 1.x-style log line of an ``interface_server`` access record."""
    client = client_text(record.client, getattr(record, "client_port", None))
    if record.protocol == "websocket":
        action = "CONNECT" if record.status == 101 else f"REJECT {record.status}"
        return f"WebSocket {action} {record.path} [{client}]"
    return (f"HTTP {record.method} {record.path} {record.status} "
            f"[{record.duration:.2f}, {client}]")


class Command(DjangoRunserver):
    help = ("Run the Switchboard development server: the interface server, worker threads "
            "and the channel layer in one process.")
    default_workers = 4

    def add_arguments(self, parser: Any) -> None:
        super().add_arguments(parser)
        parser.add_argument("--noworker", action="store_false", dest="run_worker",
                            help="Start no worker threads (run `manage.py runworker`).")
        parser.add_argument("--workers", type=int, default=self.default_workers,
                            help="Worker threads in this process (default: 4).")
        parser.add_argument("--noasgi", action="store_false", dest="use_asgi",
                            help="Run Django's WSGI development server instead.")
        parser.add_argument("--http-timeout", type=float, default=60.0,
                            help="Seconds to wait for a view to start responding (504 after).")
        parser.add_argument("--websocket-connect-timeout", type=float, default=5.0,
                            help="Seconds a consumer has to accept a WebSocket (403 after).")

    def handle(self, *args: Any, **options: Any) -> None:
        if options.get("workers", 1) < 1:
            raise CommandError("--workers must be at least 1")
        super().handle(*args, **options)

    def inner_run(self, *args: Any, **options: Any) -> None:
        if not options.get("use_asgi", True):
            return super().inner_run(*args, **options)
        autoreload.raise_last_exception()
        self.stdout.write("Performing system checks...\n\n")
        self.check(display_num_errors=True)
        self.check_migrations()
        layer = get_channel_layer()
        worker = self.start_worker(layer, options) if options.get("run_worker", True) else None
        now = datetime.now().strftime("%B %d, %Y - %X")
        addr = f"[{self.addr}]" if self._raw_ipv6 else self.addr
        self.stdout.write(
            f"{now}\n"
            f"Django version {django.get_version()}, using settings {settings.SETTINGS_MODULE!r}\n"
            f"Starting Switchboard development server at {self.protocol}://{addr}:{self.port}/\n"
            f"Channel layer: {layer.layer!r}; "
            f"{worker.threads if worker else 0} worker thread(s)\n"
            f"Quit the server with {'CTRL-BREAK' if sys.platform == 'win32' else 'CONTROL-C'}."
        )
        try:
            self.serve(layer, options)
        finally:
            if worker is not None:
                worker.stop()

    # -- the worker threads -----------------------------------------------------

    def serves_static(self, options: Any) -> bool:
        return (apps.is_installed("django.contrib.staticfiles")
                and options.get("use_static_handler", True)
                and (settings.DEBUG or options.get("insecure_serving", False)))

    def start_worker(self, layer: Any, options: Any) -> Any:
        from worker.django.staticfiles import static_route

        router = layer.router
        static = static_route() if self.serves_static(options) else None
        if static is not None:
            router = DjangoRouter([static, *router.routes], view_fallback=False)
        worker = Worker(layer.layer, router, threads=options["workers"],
                        name=f"runserver-{os.getpid()}", debug=settings.DEBUG)
        thread = threading.Thread(target=worker.run, kwargs={"install_signals": False},
                                  name="switchboard-worker", daemon=True)
        thread.start()
        return worker

    # -- the interface server ---------------------------------------------------

    def log_line(self, line: str, status: int | None = None) -> None:
        if status is not None:
            line = _status_style(self.style, status)(line)
        self.stdout.write(line)

    def serve(self, layer: Any, options: Any) -> None:
        from twisted.internet import asyncioreactor

        from interface_server.config import ServerConfig
        from interface_server.endpoints import tcp_endpoint
        from interface_server.server import Server

        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        if "twisted.internet.reactor" in sys.modules:
            from twisted.internet import reactor
        else:
            asyncioreactor.install(loop)
            from twisted.internet import reactor
        log = self.log_line

        class DevServer(Server):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                self.websockets = ClosingLog(log)

            def log_access(self, record: Any) -> None:
                log(access_line(record), record.status)

        config = ServerConfig(http_timeout=options["http_timeout"],
                              websocket_connect_timeout=options["websocket_connect_timeout"],
                              graceful_timeout=2.0, access_log=True)
        host = self.addr.strip("[]") if self._raw_ipv6 else self.addr
        server = DevServer(layer.layer, [tcp_endpoint(host, int(self.port), 128)],
                           reactor=reactor, config=config)
        failed: list[BaseException] = []

        def stop(*_: Any) -> None:
            server.shutdown().addBoth(lambda _: reactor.stop())

        def listen_failed(failure: Any) -> None:
            error = getattr(failure.value, "subFailure", failure).value
            failed.append(error)
            stop()

        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, stop)
        reactor.callWhenRunning(lambda: server.start().addErrback(listen_failed))
        reactor.run(installSignalHandlers=False)
        if failed:
            error = failed[0]
            reason = str(error)
            if isinstance(getattr(error, "socketError", None), OSError) and \
                    error.socketError.errno == errno.EADDRINUSE:
                reason = "That port is already in use."
            self.stderr.write(f"Error: {reason}")
            os._exit(1)


class ClosingLog(set):
    """The server's set of open WebSockets, logging ``WebSocket DISCONNECT`` as one leaves.

    The interface server adds a socket when its handshake starts and discards it when
    it closes; only sockets that were opened (``opened_at``) are logged, so a rejected
    handshake is logged once, as ``REJECT``.
    """

    def __init__(self, log: Any) -> None:
        super().__init__()
        self._log = log

    def discard(self, websocket: Any) -> None:
        if websocket in self and getattr(websocket, "opened_at", None) is not None:
            parts = getattr(websocket, "parts", None)
            path = (parts.target.decode("latin-1") if parts is not None
                    else getattr(websocket, "path", ""))
            client = getattr(websocket, "client", None) or ()
            self._log(f"WebSocket DISCONNECT {path} [{client_text(*client[:2])}]")
        super().discard(websocket)
