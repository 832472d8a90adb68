"""``ServerConfig``: every knob of the interface server, in one frozen dataclass.

The CLI maps its options onto this; tests build it directly. Defaults follow
Daphne 1.x where users expect them (timeouts, ping) and uvicorn/nginx where
Daphne had none (sizes, backlog). ``validate()`` raises ``ValueError`` naming
the field, so a bad value fails at startup, not on the first request.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from interface_server._accesslog import check_template
from interface_server._proxy import TrustedProxies

KIB = 1024
MIB = 1024 * KIB


@dataclass(frozen=True)
class ServerConfig:
    #: Seconds a request may wait for its response to start (504 past it); a
    #: started streaming response that sends nothing for this long is cut.
    http_timeout: float = 120.0
    #: Seconds an open WebSocket may live (closed with 1000); <= 0: no limit.
    websocket_timeout: float = 86400.0
    #: Seconds the handshake waits for the application to accept (403 past it).
    websocket_connect_timeout: float = 5.0
    #: Ping a WebSocket that sent nothing for this long; <= 0 disables pings.
    ping_interval: float = 20.0
    #: Drop a WebSocket whose ping gets no answer within this many seconds.
    ping_timeout: float = 30.0
    #: Seconds a client may take to send a complete request head (slowloris).
    header_timeout: float = 20.0
    #: Seconds an idle keep-alive connection stays open.
    keep_alive_timeout: float = 20.0
    #: Seconds a request body may go without a byte arriving (408 past it).
    body_timeout: float = 20.0
    root_path: str = ""
    proxy_headers: bool = False
    forwarded_allow_ips: str = "127.0.0.1,::1"
    ws_protocols: tuple[str, ...] = ()
    #: Origin patterns a WebSocket handshake may come from (``*`` wildcards).
    ws_allowed_origins: tuple[str, ...] = ("*",)
    #: Largest request body accepted (413 past it); None: no limit.
    max_body_size: int | None = 10 * MIB
    #: Bodies are sent to the worker in chunks of at most this many bytes.
    body_chunk_size: int = 256 * KIB
    #: Largest WebSocket message accepted (close 1009 past it).
    max_ws_message_size: int = 512 * KIB
    max_request_line: int = 8 * KIB
    #: Request line plus all header lines, in bytes (431 past it).
    max_header_size: int = 32 * KIB
    max_headers: int = 100
    #: Bytes written to one connection that its client has not read yet: past
    #: this the client is not keeping up and the connection is cut.
    max_output_buffer: int = 16 * MIB
    #: Open connections past which new requests get 503; None: no limit.
    limit_concurrency: int | None = None
    graceful_timeout: float = 30.0
    access_log: bool = True
    access_log_format: str | None = None
    access_log_json: bool = False
    backlog: int = 2048
    #: How often the timeout sweep runs (seconds).
    sweep_interval: float = 1.0
    #: Registry heartbeat interval: the server beats five times per interval, and is
    #: shown stale within one interval if it stops; the entry lives three intervals.
    heartbeat_interval: float = 5.0
    #: The live-worker view is re-read this often (seconds; at most a fifth of
    #: ``heartbeat_interval``), so a killed worker stops counting within one interval.
    worker_refresh_interval: float = 1.0
    #: Operations endpoints (``interface_server.operations``), each off by default:
    #: Prometheus metrics, liveness and readiness, the live dashboard (and its JSON
    #: feed at ``dashboard_path + ".json"``).
    metrics: bool = False
    metrics_path: str = "/metrics"
    health: bool = False
    health_path: str = "/-/health"
    ready_path: str = "/-/ready"
    dashboard: bool = False
    dashboard_path: str = "/-/dashboard"
    #: Serve them on the application's ports too (False with ``--ops-port``).
    ops_on_app_ports: bool = True
    #: Seconds between two looks at the layer for the metrics and the dashboard.
    ops_interval: float = 2.0
    trusted_proxies: TrustedProxies = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.validate()
        object.__setattr__(self, "trusted_proxies", TrustedProxies(self.forwarded_allow_ips))

    def validate(self) -> None:
        for name in ("http_timeout", "websocket_connect_timeout", "ping_timeout",
                     "header_timeout", "keep_alive_timeout", "body_timeout", "sweep_interval",
                     "heartbeat_interval", "worker_refresh_interval", "ops_interval"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        if self.graceful_timeout < 0:
            raise ValueError(f"graceful_timeout must be >= 0, got {self.graceful_timeout!r}")
        for name in ("body_chunk_size", "max_ws_message_size", "max_request_line",
                     "max_header_size", "max_headers", "max_output_buffer", "backlog"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("max_body_size", "limit_concurrency"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 0):
                raise ValueError(f"{name} must be None or an integer >= 0, got {value!r}")
        if self.root_path and (not self.root_path.startswith("/") or self.root_path.endswith("/")):
            raise ValueError(f"root_path must start with '/' and not end with one, "
                             f"got {self.root_path!r}")
        if self.access_log_format is not None:
            check_template(self.access_log_format)
        paths = [self.metrics_path, self.health_path, self.ready_path, self.dashboard_path,
                 self.dashboard_path + ".json"]
        for name, path in zip(("metrics_path", "health_path", "ready_path", "dashboard_path"),
                              paths, strict=False):
            if not isinstance(path, str) or not path.startswith("/") or " " in path:
                raise ValueError(f"{name} must be a URL path starting with '/', got {path!r}")
        if len(set(paths)) != len(paths):
            raise ValueError(f"the operations paths must differ, got {paths}")

    def replace(self, **changes: object) -> ServerConfig:
        """A copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]
