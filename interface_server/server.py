"""``Server``: listens, routes replies to connections, sweeps timeouts, drains on shutdown.

How this works. One ``Server`` per process owns:

* the endpoints it listens on, each serving ``SwitchboardHTTPFactory``
  (WebSockets are upgraded from HTTP requests, on the same ports);
* one reply prefix ``<server-id>!`` and one reply loop: ``receive_batch_async``
  on that prefix (a whole burst of replies per round trip), forever, through
  ``LayerIO`` -- an idle server waits inside the layer, it never polls. Each
  reply goes to ``dispatch_reply``, which asks the ``ReplyRouter`` for the
  connection; unknown channels are dropped and counted;
* a ``WorkerView`` of the live workers (registered, heartbeat not stale:
  ``registry.fresh_processes``), re-read off the reactor thread every
  ``worker_refresh_interval`` (at most a fifth of the heartbeat interval, so a
  killed worker stops counting within one interval) and on demand at most
  that often, so a request that no worker would ever answer gets 503 at once
  instead of hanging (but not while the registry may still be refilling after
  a layer outage, see ``_workers``);
* one sweep every ``sweep_interval`` that asks each connection whether a
  timeout is due (the decisions are pure functions in ``_timeouts``);
* a registry heartbeat (kind ``interfaceserver``) while it runs, five times
  per ``heartbeat_interval`` (see ``asgi_spec.registry``).

Protocols talk to the layer only through ``send_to_layer``; tests build a
``Server`` with ``MemoryReactorClock`` and ``ImmediateLayerIO`` and drive it
with ``dataReceived``, ``dispatch_reply`` and ``clock.advance``.

Shutdown (``shutdown()``): stop listening, close idle keep-alive connections,
answer new requests 503, close WebSockets with 1001 (their
``websocket.disconnect`` is sent), wait for in-flight HTTP responses and
pending sends up to ``graceful_timeout``, then cut what is left and stop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections import Counter
from collections.abc import Iterable
from typing import Any

from twisted.internet import defer, task
from twisted.internet.defer import Deferred, ensureDeferred, maybeDeferred, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.python.failure import Failure

from asgi_spec import registry
from asgi_spec.base import BaseChannelLayer
from asgi_spec.exceptions import ChannelFull, LayerUnavailable, MessageTooLarge
from interface_server import _direct_write as direct_write
from interface_server._accesslog import DEFAULT_FORMAT, AccessRecord, format_json, format_text
from interface_server._http import RequestParts
from interface_server._replies import ReplyRouter, new_server_id
from interface_server._workers import WorkerView
from interface_server.config import ServerConfig
from interface_server.http_channel import SwitchboardHTTPFactory
from interface_server.http_request import ChannelRequest
from interface_server.layer_io import AsyncioLayerIO, LayerIO
from interface_server.operations import Operations
from interface_server.ws_protocol import SwitchboardWebSocketFactory, upgrade_request

logger = logging.getLogger("interface_server")
access_logger = logging.getLogger("interface_server.access")

#: How long one reply-loop receive waits inside the layer before it is renewed:
#: None lets the layer use its ``blocking_timeout``, which it knows fits its
#: connections (a Redis socket timeout shorter than the wait would fail it).
RECEIVE_TIMEOUT: float | None = None
REGISTRY_KIND = registry.KIND_INTERFACESERVER
WORKER_KIND = registry.KIND_WORKER


def fit_to_layer(config: ServerConfig, layer: BaseChannelLayer) -> ServerConfig:
    """``config`` with message-size knobs lowered to fit the layer's message limit."""
    limit = getattr(layer, "max_message_size", None)
    if not isinstance(limit, int):
        return config
    chunk_room = max(limit - config.max_header_size - 4096, 1024)
    ws_room = max(limit - config.max_request_line - 4096, 1024)
    changes: dict[str, int] = {}
    if config.body_chunk_size > chunk_room:
        changes["body_chunk_size"] = chunk_room
    if config.max_ws_message_size > ws_room:
        changes["max_ws_message_size"] = ws_room
    if changes:
        logger.warning("lowered %s to fit the layer's max_message_size of %d bytes",
                       ", ".join(f"{k} to {v}" for k, v in changes.items()), limit)
        return config.replace(**changes)
    return config


class Server:
    def __init__(
        self,
        layer: BaseChannelLayer,
        endpoints: Iterable[str | IStreamServerEndpoint] = (),
        *,
        reactor: Any = None,
        config: ServerConfig | None = None,
        layer_io: LayerIO | None = None,
        server_id: str | None = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as global_reactor

            reactor = global_reactor
        self.reactor = reactor
        self.layer = layer
        self.config = fit_to_layer(config or ServerConfig(), layer)
        self.layer_io: LayerIO = layer_io if layer_io is not None else AsyncioLayerIO(layer)
        self.server_id = server_id or new_server_id()
        self.router: ReplyRouter[Any] = ReplyRouter(self.server_id)
        self.workers = WorkerView(min(self.config.worker_refresh_interval,
                                      registry.cache_limit(self.config.heartbeat_interval)))
        self.has_registry = "registry" in getattr(layer, "extensions", ())
        self.stats: Counter[str] = Counter()
        self.http_channels: set[Any] = set()
        self.http_requests: set[ChannelRequest] = set()
        self.websockets: set[Any] = set()
        self.draining = False
        self.http_factory = SwitchboardHTTPFactory(self)
        # Operations endpoints (metrics, health, dashboard): None unless configured.
        self.ops = Operations(self) if Operations.wanted(self.config) else None
        self.metrics = self.ops.metrics if self.ops is not None else None
        self.ws_factory = SwitchboardWebSocketFactory(self)
        self.endpoints = [serverFromString(reactor, e) if isinstance(e, str) else e
                          for e in endpoints]
        self.ports: list[IListeningPort] = []
        self._sends_in_flight = 0
        self._refreshing = False
        self._refresh_waiters: list[Deferred[None]] = []
        self._receiving = False
        #: The last probe of this server's reply queue found the layer unreachable:
        #: requests are refused (503) until a probe succeeds (see ``probe_replies``).
        self.replies_unreachable = False
        self._probing = False
        self._waiting: Deferred[Any] | None = None
        self._reply_loop: Deferred[None] | None = None
        self._sweeper = task.LoopingCall(self.sweep)
        self._sweeper.clock = reactor
        self._heartbeat = task.LoopingCall(self.heartbeat)
        self._heartbeat.clock = reactor
        self._worker_refresh = task.LoopingCall(self._refresh_tick)
        self._worker_refresh.clock = reactor
        self._shutdown: Deferred[None] | None = None
        self._access_template = self.config.access_log_format or DEFAULT_FORMAT
        self.started_at: float | None = None  # by the layer's clock, at the first heartbeat

    def now(self) -> float:
        return self.reactor.seconds()

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> Deferred[list[IListeningPort]]:
        """Start the reply loop, the sweep and the heartbeat, then listen."""
        self.start_reply_loop()
        self.start_timers()
        listening = [ep.listen(self.http_factory) for ep in self.endpoints]
        return defer.gatherResults(listening, consumeErrors=True).addCallback(self._listening)

    def _listening(self, ports: list[IListeningPort]) -> list[IListeningPort]:
        self.ports = list(ports)
        for port in self.ports:
            logger.info("listening on %s (reply prefix %s)", _describe(port), self.router.prefix)
        if self._heartbeat.running:
            self.heartbeat()  # publish the ports now, not one interval later
        return self.ports

    def start_timers(self) -> None:
        self._sweeper.start(self.config.sweep_interval, now=False)
        if self.has_registry:
            self._heartbeat.start(registry.beat_period(self.config.heartbeat_interval),
                                  now=True)
            self._worker_refresh.start(self.workers.refresh_interval, now=False)
        if self.ops is not None:
            self.ops.start()

    def shutdown(self) -> Deferred[None]:
        """Drain and stop (see the module docstring). Idempotent."""
        if self._shutdown is not None:
            return self._shutdown
        self.draining = True
        logger.info("shutting down: %d HTTP request(s) in flight, %d WebSocket(s) open; "
                    "waiting up to %gs", len(self.http_requests), len(self.websockets),
                    self.config.graceful_timeout)
        for port in self.ports:
            maybeDeferred(port.stopListening)
        for channel in list(self.http_channels):
            if channel.idle:
                channel.close()
        for websocket in list(self.websockets):
            websocket.close_for_shutdown()
        self._shutdown = ensureDeferred(self._drain())
        return self._shutdown

    async def _drain(self) -> None:
        deadline = self.now() + self.config.graceful_timeout
        while not self.drained() and self.now() < deadline:
            await task.deferLater(self.reactor, min(0.05, max(deadline - self.now(), 0)))
        if not self.drained():
            logger.warning("graceful timeout: cutting %d HTTP request(s) and %d WebSocket(s)",
                           len(self.http_requests), len(self.websockets))
        try:
            for channel in list(self.http_channels):
                channel.close()
            for request in list(self.http_requests):
                request.abort()
            for websocket in list(self.websockets):
                websocket.dropConnection(abort=True)
        except Exception:
            logger.exception("error while closing connections at shutdown")
        self.stop_reply_loop()
        for loop in (self._sweeper, self._heartbeat, self._worker_refresh):
            if loop.running:
                loop.stop()
        if self.ops is not None:
            self.ops.stop()
        if self.has_registry:
            unregister = self.layer_io.call(self.layer.unregister_process, REGISTRY_KIND,
                                            self.server_id)
            unregister.addTimeout(2, self.reactor).addErrback(
                lambda f: logger.warning("could not unregister from the layer: %s", f.value))
            await unregister
        self.layer_io.close()
        logger.info("stopped")

    def drained(self) -> bool:
        return not self.http_requests and not self.websockets and self._sends_in_flight == 0

    # -- the reply loop --------------------------------------------------------

    def start_reply_loop(self) -> None:
        self._receiving = True
        self._reply_loop = ensureDeferred(self._receive_replies())
        self._reply_loop.addErrback(lambda f: logger.critical("reply loop died: %s",
                                                              f.getTraceback()))

    def stop_reply_loop(self) -> None:
        self._receiving = False
        if self._waiting is not None:
            self._waiting.cancel()

    async def _receive_replies(self) -> None:
        failures = 0
        while self._receiving:
            self._waiting = self.layer_io.receive_batch([self.router.prefix], RECEIVE_TIMEOUT)
            try:
                replies = await self._waiting
            except (defer.CancelledError, asyncio.CancelledError):
                return
            except Exception as exc:
                failures += 1
                self.workers.doubt(self.now())  # the registry may come back emptied
                if self.metrics is not None:
                    self.metrics.layer_error("receive", exc)
                log = logger.error if failures == 1 else logger.debug
                log("cannot receive replies from the layer (%s); retrying with backoff", exc)
                self._waiting = task.deferLater(self.reactor, min(0.1 * 2 ** failures, 5.0))
                try:
                    await self._waiting
                except (defer.CancelledError, asyncio.CancelledError):
                    return
                continue
            finally:
                self._waiting = None
            if failures:
                logger.warning("receiving replies again after %d failed attempt(s)", failures)
                failures = 0
            corked = direct_write.cork()  # each connection's output of the burst: one send
            try:
                for channel, message in replies:
                    self.dispatch_reply(channel, message)
            finally:
                if corked:
                    direct_write.uncork()

    def dispatch_reply(self, channel: str, message: dict[str, Any]) -> None:
        """Hand ``message`` to the connection owning ``channel`` (or drop and count it)."""
        target = self.router.route(channel)
        if target is None:
            self.stats["replies_dropped"] += 1
            logger.debug("dropped a reply for %s: no such connection (any more)", channel)
            return
        if self.metrics is not None:
            self.metrics.reply_received(target, message, self.now())
        try:
            target.handle_reply(message)
        except Exception:
            logger.exception("error while writing a reply from %s", channel)

    # -- layer access for the protocols ----------------------------------------

    def send_to_layer(self, channel: str, message: dict[str, Any]) -> Deferred[None]:
        self._sends_in_flight += 1
        self.stats["messages_sent"] += 1
        if self.metrics is not None:
            self.metrics.message_sent(channel)
        sent = self.layer_io.send(channel, message)
        sent.addBoth(self._send_done)
        return sent

    def _send_done(self, result: Any) -> Any:
        self._sends_in_flight -= 1
        if isinstance(result, Failure) and result.check(LayerUnavailable):
            self.workers.doubt(self.now())  # the registry may come back emptied
        if isinstance(result, Failure) and self.metrics is not None:
            self.metrics.layer_error("send", result)
        return result

    def send_disconnect(self, channel: str, message: dict[str, Any]) -> None:
        """Send a best-effort notification (``http.disconnect``): a full channel drops it."""
        self.send_to_layer(channel, message).addErrback(self.dropped_send, channel)

    def dropped_send(self, failure: Failure, channel: str) -> None:
        if failure.check(ChannelFull):
            self.stats["notifications_dropped"] += 1
            logger.debug("dropped a %s message: the channel is full", channel)
        else:
            logger.warning("could not send a %s message: %s", channel, failure.value)

    def layer_error_answer(self, failure: Failure, channel: str) -> tuple[int, str]:
        """``(status, detail)`` to answer a client when sending to ``channel`` failed."""
        if failure.check(ChannelFull):
            self.stats["channel_full"] += 1
            return 503, (f"the {channel} channel is full: the workers are not keeping up; "
                         "retry shortly")
        if failure.check(LayerUnavailable):
            self.stats["layer_unavailable"] += 1
            logger.error("channel layer unavailable while sending to %s: %s", channel,
                         failure.value)
            return 503, "the channel layer is unavailable; retry shortly"
        if failure.check(MessageTooLarge):
            return 413, "the request is too large for the channel layer"
        logger.error("sending to %s failed: %s", channel, failure.getTraceback())
        return 500, "internal server error (see the server log)"

    def consumer_available(self, channel: str) -> Deferred[bool | None]:
        """Whether a live worker consumes ``channel``: True, False, or None (unknown).

        Answers at once from the cached view when it can; waits for a refresh
        only when the view is unknown or says no but is old enough to refresh.
        """
        answered, known = self.consumer_known(channel)
        if answered:
            return succeed(known)
        return self.refresh_workers().addCallback(lambda _: self.workers.consumes(channel))

    def consumer_known(self, channel: str) -> tuple[bool, bool | None]:
        """``(True, consumer_available's answer)`` when the cached view gives it at
        once (no Deferred: this is asked once per request), else ``(False, None)``:
        wait for a refresh."""
        if not self.has_registry:
            return True, None
        known = self.workers.consumes(channel)
        stale = self.workers.is_stale(self.now())
        if known is True or (known is False and not stale):
            if stale:
                self.refresh_workers()
            return True, known
        return False, None

    def refresh_workers(self, force: bool = False) -> Deferred[None]:
        """Reload the live-worker view (at most one load in flight; rate-limited
        unless ``force``). Workers whose heartbeat is stale are left out."""
        waiter: Deferred[None] = Deferred()
        if self._refreshing:
            self._refresh_waiters.append(waiter)
            return waiter
        if not force and not self.workers.is_stale(self.now()):
            return succeed(None)
        self._refreshing = True
        self._refresh_waiters.append(waiter)
        self.layer_io.call(registry.fresh_processes, self.layer, WORKER_KIND).addBoth(
            self._refreshed)
        return waiter

    def _refresh_tick(self) -> None:
        """The periodic re-read: the view is never older than one refresh interval
        (plus a read), whether requests arrive or not."""
        self.refresh_workers(force=True)

    def _refreshed(self, result: Any) -> None:
        self._refreshing = False
        if isinstance(result, Failure):
            if self.workers.loaded_at is None or self.workers.worker_count is not None:
                logger.warning("cannot read the worker registry: %s", result.value)
            self.workers.failed(self.now())
            if self.metrics is not None:
                self.metrics.layer_error("registry", result)
        else:
            self.workers.update(self.now(), result)
        waiters, self._refresh_waiters = self._refresh_waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def upgrade_to_websocket(self, request: ChannelRequest, parts: RequestParts) -> None:
        upgrade_request(request, parts, self.ws_factory)

    def over_concurrency_limit(self) -> bool:
        """More connections are open than --limit-concurrency allows."""
        limit = self.config.limit_concurrency
        if limit is None:
            return False
        return len(self.http_channels) + len(self.websockets) > limit

    # -- periodic work -----------------------------------------------------------

    def sweep(self) -> None:
        """Ask every connection whether a timeout is due (see ``_timeouts``)."""
        now = self.now()
        for group in (self.http_channels, self.http_requests, self.websockets):
            for connection in list(group):
                try:
                    connection.check_timeout(now)
                except Exception:
                    logger.exception("error in the timeout sweep")
        self.probe_replies()

    def probe_replies(self) -> None:
        """Check, off the reactor, that the queue of this server's replies can be reached.

        A blocking receive rides out an outage silently (the Redis layer retries until its
        timeout), so the reply loop alone cannot tell that replies cannot arrive; on a
        sharded layer the server's requests would still go out (``http.request`` may live
        on a healthy server) and their clients would wait for a 504. So, once per sweep, a
        read-only look at the reply queue (``channel_statistics``): while it fails with
        ``LayerUnavailable``, new requests and WebSockets get 503 at once.
        """
        look = getattr(self.layer, "channel_statistics", None)
        if self._probing or not self._receiving or look is None:
            return
        self._probing = True
        self.layer_io.call(look, self.router.prefix).addBoth(self._probed)

    def _probed(self, result: Any) -> None:
        self._probing = False
        down = isinstance(result, Failure) and result.check(LayerUnavailable) is not None
        if down:
            self.workers.doubt(self.now())  # the registry may come back emptied
            if not self.replies_unreachable:
                logger.error("the queue of this server's replies (%s) is unreachable; "
                             "answering 503 until it is back: %s", self.router.prefix,
                             result.value)
        elif self.replies_unreachable:
            logger.warning("the queue of this server's replies is reachable again")
        self.replies_unreachable = down

    def heartbeat(self) -> None:
        """Renew this server's entry in the layer registry."""
        layer_clock = getattr(self.layer, "clock", time.time)
        if self.started_at is None:
            self.started_at = layer_clock()
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "reply_prefix": self.router.prefix,
            "listening": [_describe(port) for port in self.ports],
            "connections": len(self.http_channels) + len(self.websockets),
            "http_connections": len(self.http_channels),
            "http_requests_in_flight": len(self.http_requests),
            "websockets": len(self.websockets),
            "started_at": self.started_at,
            "heartbeat_at": layer_clock(),
            "heartbeat_interval": self.config.heartbeat_interval,
            "stats": dict(self.stats),
        }
        ttl = registry.registration_ttl(self.config.heartbeat_interval)
        self.layer_io.call(self.layer.register_process, REGISTRY_KIND, self.server_id, info,
                           ttl).addErrback(self._heartbeat_failed)

    def _heartbeat_failed(self, failure: Failure) -> None:
        logger.warning("registry heartbeat failed: %s", failure.value)
        self.workers.doubt(self.now())  # the registry may come back emptied
        if self.metrics is not None:
            self.metrics.layer_error("heartbeat", failure)

    # -- logging and introspection ----------------------------------------------

    @property
    def records_access(self) -> bool:
        """Whether anything reads access records (the access log or the metrics):
        when nothing does, the protocols skip making them."""
        return self.metrics is not None or bool(self.config.access_log)

    def log_access(self, record: AccessRecord) -> None:
        if self.metrics is not None:
            self.metrics.access(record)
        if not self.config.access_log:
            return
        if self.config.access_log_json:
            access_logger.info(format_json(record))
        else:
            access_logger.info(format_text(record, self._access_template))

    def statistics(self) -> dict[str, Any]:
        return {
            "server_id": self.server_id,
            "http_connections": len(self.http_channels),
            "http_requests_in_flight": len(self.http_requests),
            "websockets": len(self.websockets),
            "replies_dropped": self.router.dropped,
            "sends_in_flight": self._sends_in_flight,
            **self.stats,
        }


def _describe(port: IListeningPort) -> str:
    host = port.getHost()
    if hasattr(host, "port"):
        return f"{getattr(host, 'type', 'TCP').lower()}:{host.host}:{host.port}"
    return f"unix:{getattr(host, 'name', host)}"
