"""The interface server's operations endpoints: metrics, liveness, readiness, dashboard.

How this works. ``Operations`` exists when ``ServerConfig`` enables any of
``metrics``, ``health`` or ``dashboard`` (all off by default, so nothing is
taken from the application's URL space unless asked). It

* answers its paths (``/metrics``, ``/-/health``, ``/-/ready``,
  ``/-/dashboard`` and ``/-/dashboard.json`` by default) itself: on the
  application's ports, through one check at the top of
  ``ChannelRequest.process`` (``handle``), and/or on a separate port
  (``site()``, for ``--ops-port``). A request for any other path goes to the
  application as usual;
* with metrics or the dashboard on, looks at the layer every ``ops_interval``
  seconds (``asgi_spec.ops.snapshot``, off the reactor thread) and keeps the
  latest look plus a ten-minute history of samples for the dashboard's charts:
  channel depths, messages per second, HTTP requests per second, the time to
  a request's first reply (p50/p95 over the interval), workers busy and idle;
* answers a scrape or a feed request from a look at most ``max_age`` old
  (``ops_interval``, but never more than a fifth of the heartbeat interval):
  when the latest is older, it takes a new one first (one at a time; it is
  not a chart sample). Heartbeats are judged at the time of the answer, so a
  killed worker is ``stale`` in ``/metrics`` and the feed within one
  heartbeat interval (see ``asgi_spec.registry``).

Liveness (``/-/health``) is 200 while the reactor answers; it checks nothing
else, so a layer outage never gets a healthy process restarted. Readiness
(``/-/ready``) is 200 only when a message makes a round trip through the layer
(a send on a fresh single-reader channel, then a receive that finds it,
each within ``READY_TIMEOUT``), a live worker consumes ``http.request`` (when the layer
has a registry to tell), and the server is not draining; otherwise 503. Both
answer JSON saying what was checked.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from twisted.internet import task
from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.web import resource
from twisted.web import server as web_server

from asgi_spec import names, registry
from asgi_spec.formats import HTTP_REQUEST
from asgi_spec.ops import Snapshot, diagnose, snapshot, status_dict
from interface_server.dashboard import PAGE
from interface_server.layer_io import AsyncioLayerIO
from interface_server.metrics import CONTENT_TYPE, ServerMetrics

if TYPE_CHECKING:
    from interface_server.server import Server

logger = logging.getLogger("interface_server.operations")

#: Seconds the readiness round trip through the layer may take.
READY_TIMEOUT = 2.0
#: Seconds of samples the dashboard's charts cover.
HISTORY_SECONDS = 600.0
JSON_TYPE = b"application/json"


@dataclass
class Look:
    """The latest look at the layer, and the one before (for rates)."""

    snapshot: Snapshot | None
    previous: Snapshot | None
    error: str | None
    clock: Callable[[], float]

    def layer_now(self) -> float:
        return self.clock()


class Operations:
    def __init__(self, server: Server) -> None:
        self.server = server
        config = server.config
        self.config = config
        self.look = Look(None, None, None, getattr(server.layer, "clock", time.time))
        self.metrics = (ServerMetrics(server, latest=lambda: self.look)
                        if config.metrics or config.dashboard else None)
        self.paths: dict[str, Callable[[Any], None]] = {}
        if self.metrics is not None:  # scrapes and polls are not application traffic
            self.metrics.skip_paths = self.paths
        if config.metrics:
            self.paths[config.metrics_path] = self.serve_metrics
        if config.health:
            self.paths[config.health_path] = self.serve_health
            self.paths[config.ready_path] = self.serve_ready
        if config.dashboard:
            self.paths[config.dashboard_path] = self.serve_dashboard
            self.paths[config.dashboard_path + ".json"] = self.serve_feed
        self.history: deque[dict[str, Any]] = deque(
            maxlen=max(int(HISTORY_SECONDS / config.ops_interval), 2))
        self._sampling = False  # a look is in flight
        self._record = False  # ... and it is a chart sample
        self._look_waiters: list[Deferred[None]] = []
        self._looked_at: float | None = None  # reactor time the latest look started
        #: Scrapes and feed requests are answered from a look at most this old (seconds).
        self.max_age = min(config.ops_interval, registry.cache_limit(config.heartbeat_interval))
        self._sampler = task.LoopingCall(self.sample)
        self._sampler.clock = server.reactor
        self._executor: ThreadPoolExecutor | None = None
        self._requests_at_last_sample: tuple[float, int] | None = None
        self.ports: list[Any] = []

    @classmethod
    def wanted(cls, config: Any) -> bool:
        return bool(config.metrics or config.health or config.dashboard)

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        if self.metrics is not None and not self._sampler.running:
            self._sampler.start(self.config.ops_interval, now=True)

    def stop(self) -> None:
        if self._sampler.running:
            self._sampler.stop()
        for port in self.ports:
            port.stopListening()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    def site(self) -> web_server.Site:
        """A twisted.web site answering only the operations paths (for ``--ops-port``)."""
        site = web_server.Site(_OpsResource(self))
        site.noisy = False
        site.log = lambda request: None  # type: ignore[method-assign]
        return site

    def listen(self, endpoint: Any) -> Deferred[Any]:
        listening = endpoint.listen(self.site())
        listening.addCallback(self.ports.append)
        return listening

    # -- the layer, looked at off the reactor thread -------------------------------

    def _call(self, fn: Callable[..., Any], *args: Any) -> Deferred[Any]:
        if isinstance(self.server.layer_io, AsyncioLayerIO):
            if self._executor is None:  # its own thread: never delays the registry's
                self._executor = ThreadPoolExecutor(1, thread_name_prefix="ops-snapshot")
            loop = asyncio.get_event_loop()
            return Deferred.fromFuture(loop.run_in_executor(self._executor, fn, *args))
        return self.server.layer_io.call(fn, *args)

    def sample(self) -> Deferred[None] | None:
        """Take one look at the layer (unless one is still running) and record a sample."""
        self._record = True  # a look in flight records this sample when it lands
        if self._sampling:
            return None
        return self._take_look()

    def fresh(self) -> Deferred[None]:
        """Fires once the latest look is at most ``max_age`` old, taking one if needed."""
        waiter: Deferred[None] = Deferred()
        if self._sampling:
            self._look_waiters.append(waiter)
            return waiter
        if self._looked_at is not None and self.server.now() - self._looked_at < self.max_age:
            return succeed(None)
        self._look_waiters.append(waiter)
        self._take_look()
        return waiter

    def _take_look(self) -> Deferred[None]:
        self._sampling = True
        self._looked_at = self.server.now()
        looked = self._call(snapshot, self.server.layer)
        looked.addCallbacks(self._looked, self._look_failed)
        looked.addBoth(self._wake)
        return looked

    def _wake(self, result: Any) -> Any:
        waiters, self._look_waiters = self._look_waiters, []
        for waiter in waiters:
            waiter.callback(None)
        return result

    def _looked(self, current: Snapshot) -> None:
        self._sampling = False
        before = self.look.snapshot
        self.look = Look(current, before, None, self.look.clock)
        if self._record:
            self._record = False
            self.history.append(self._sample(current, before))

    def _look_failed(self, failure: Any) -> None:
        self._sampling = False
        self._record = False
        if self.look.error is None:
            logger.warning("cannot look at the layer for metrics/dashboard: %s", failure.value)
        self.look = Look(self.look.snapshot, self.look.previous,
                         f"{type(failure.value).__name__}: {failure.value}", self.look.clock)
        if self.metrics is not None:
            self.metrics.layer_error("snapshot", failure)

    def _sample(self, current: Snapshot, before: Snapshot | None) -> dict[str, Any]:
        span = current.taken_at - before.taken_at if before is not None else 0.0
        rates: dict[str, float | None] = {}
        for channel in current.channels:
            old = before.channel(channel.name) if before is not None else None
            rates[channel.name] = ((channel.sent - old.sent) / span
                                   if old is not None and span > 0 and channel.sent >= old.sent
                                   else None)
        assert self.metrics is not None
        seen, now = self.metrics.requests_seen, self.server.now()
        requests_rate = None
        if self._requests_at_last_sample is not None:
            then, count = self._requests_at_last_sample
            if now > then:
                requests_rate = (seen - count) / (now - then)
        self._requests_at_last_sample = (now, seen)
        latency = self.metrics.latencies.take()
        live = current.live_workers()
        busy = sum(1 for w in live if w.busy)
        return {
            "t": current.taken_at,
            "pending": {c.name: c.pending for c in current.channels},
            "rate": rates,
            "requests_per_s": requests_rate,
            "first_reply_ms": {key: (None if latency[key] is None else latency[key] * 1000)
                               for key in ("p50", "p95", "max")},
            "replies_measured": latency["count"],
            "workers": {"busy": busy, "idle": len(live) - busy},
            "connections": {"http": len(self.server.http_channels),
                            "websocket": len(self.server.websockets)},
        }

    # -- requests ------------------------------------------------------------------

    def handle(self, request: Any, *, app_port: bool = True) -> bool:
        """Answer ``request`` if its path is an operations path; ``False`` otherwise."""
        if app_port and not self.config.ops_on_app_ports:
            return False
        handler = self.paths.get(request.path.decode("latin-1"))
        if handler is None:
            return False
        if request.method not in (b"GET", b"HEAD"):
            respond(request, 405, b"text/plain; charset=utf-8", b"use GET\n",
                    [(b"allow", b"GET, HEAD")])
            return True
        handler(request)
        return True

    def serve_metrics(self, request: Any) -> None:
        metrics = self.metrics
        assert metrics is not None
        self.fresh().addCallback(lambda _: respond(request, 200, CONTENT_TYPE.encode(),
                                                   metrics.render()))

    def serve_health(self, request: Any) -> None:
        body = {"status": "ok", "server_id": self.server.server_id,
                "draining": self.server.draining}
        respond(request, 200, JSON_TYPE, _json(body))

    def serve_ready(self, request: Any) -> None:
        checked = ensureDeferred(self.readiness())
        checked.addCallback(lambda found: respond(
            request, 200 if found["ready"] else 503, JSON_TYPE, _json(found)))
        checked.addErrback(lambda failure: respond(
            request, 503, JSON_TYPE, _json({"ready": False, "error": str(failure.value)})))

    async def readiness(self) -> dict[str, Any]:
        """``{"ready": bool, ...}``: the layer round trip, a worker for http.request, draining."""
        server = self.server
        started = server.now()
        layer: dict[str, Any] = {"ok": True}
        try:
            channel = names.new_channel_name("switchboard.ready?")
            sent = server.layer_io.send(channel, {"ready": True})
            await sent.addTimeout(READY_TIMEOUT, server.reactor)
            received = server.layer_io.call(server.layer.receive, [channel])  # no wait
            got, _ = await received.addTimeout(READY_TIMEOUT, server.reactor)
            if got != channel:
                raise TimeoutError("the message sent did not come back")
        except Exception as exc:
            layer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        layer["seconds"] = max(server.now() - started, 0.0)
        worker: dict[str, Any] = {"channel": HTTP_REQUEST, "ok": None}
        if layer["ok"]:
            available: bool | None = None
            if server.has_registry:  # a fresh view (at most one refresh interval old)
                await server.refresh_workers()
                available = server.workers.consumes(HTTP_REQUEST)
            worker["ok"] = available
            worker["detail"] = {True: "a live worker consumes it",
                                False: "no live worker consumes it",
                                None: "unknown (the layer cannot tell)"}[available]
        ready = layer["ok"] and worker["ok"] is not False and not server.draining
        return {"ready": ready, "draining": server.draining, "layer": layer,
                "worker": worker, "server_id": server.server_id}

    def serve_dashboard(self, request: Any) -> None:
        page = PAGE.replace("__FEED__", self.config.dashboard_path + ".json")
        respond(request, 200, b"text/html; charset=utf-8", page.encode())

    def serve_feed(self, request: Any) -> None:
        self.fresh().addCallback(lambda _: respond(request, 200, JSON_TYPE, _json(self.feed())))

    def feed(self) -> dict[str, Any]:
        """The dashboard's JSON: this server, the history and the latest status."""
        look, server = self.look, self.server
        status = None
        if look.snapshot is not None:
            now = look.layer_now()
            problems = diagnose(look.snapshot, now, previous=look.previous)
            status = status_dict(look.snapshot, problems, now, previous=look.previous)
        return {
            "server": {"id": server.server_id, "http_connections": len(server.http_channels),
                       "websockets": len(server.websockets),
                       "requests_in_flight": len(server.http_requests),
                       "requests_total": self.metrics.requests_seen if self.metrics else None,
                       "draining": server.draining},
            "interval": self.config.ops_interval,
            "error": look.error,
            "history": list(self.history),
            "status": status,
        }


class _OpsResource(resource.Resource):
    isLeaf = True

    def __init__(self, operations: Operations) -> None:
        super().__init__()
        self.operations = operations

    def render(self, request: Any) -> Any:
        if not self.operations.handle(request, app_port=False):
            respond(request, 404, b"text/plain; charset=utf-8",
                    b"not an operations path: " + ", ".join(
                        sorted(self.operations.paths)).encode() + b"\n")
        return web_server.NOT_DONE_YET


def _json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True).encode() + b"\n"


def respond(request: Any, status: int, content_type: bytes, body: bytes,
            headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    """Write a whole response (once; not after the client left)."""
    if request.finished or getattr(request, "_disconnected", False):
        return
    request.setResponseCode(status)
    request.responseHeaders.setRawHeaders(b"content-type", [content_type])
    request.responseHeaders.setRawHeaders(b"cache-control", [b"no-store"])
    request.responseHeaders.setRawHeaders(b"content-length", [str(len(body)).encode()])
    for name, value in headers:
        request.responseHeaders.setRawHeaders(name, [value])
    if request.method != b"HEAD":
        request.write(body)
    request.finish()
