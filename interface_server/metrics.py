"""Prometheus metrics of one interface server, and of the deployment it sees in the layer.

How this works. ``ServerMetrics`` owns its own ``CollectorRegistry`` (never the
global one, so several servers in one process do not collide) with two kinds
of metric:

* this process's, updated by small hooks in ``Server`` as things happen:
  requests by status and their duration, the time from sending a request's
  message to its first reply (what a client waits for the queue plus the
  consumer: the server cannot see inside the layer, and message formats stay
  unstamped), WebSocket handshakes and messages in and out, messages sent per
  channel, layer errors per operation; gauges of open connections read at
  scrape time; and the ``Server.stats`` counters as ``switchboard_server_events``;
* the deployment's, read from the latest ``asgi_spec.ops`` snapshot that
  ``interface_server.operations`` keeps (the same numbers ``switchboard status``
  prints): per channel pending, capacity, oldest age and counters; workers by
  state (``stale`` once a heartbeat is late, judged at scrape time: a killed
  worker shows within one heartbeat interval), their processed and failed
  counts, per-channel consumer time (what each worker publishes in its
  heartbeat, so worker processes need no port);
  interface servers' connections; groups; problems by severity.

Channel labels of single-reader channels (``http.request.body?x1y2``) are cut
to their pattern (``http.request.body?``), so label values stay few.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Container, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from asgi_spec.ops import diagnose

if TYPE_CHECKING:
    from interface_server._accesslog import AccessRecord
    from interface_server.server import Server

CONTENT_TYPE = CONTENT_TYPE_LATEST
#: Seconds buckets for request, first-reply and accept times.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0, 30.0, 60.0, 120.0)
PREFIX = "switchboard"


def channel_label(channel: str) -> str:
    """``channel`` for a label: single-reader names cut to their ``name?`` pattern."""
    question = channel.find("?")
    return channel if question < 0 else channel[: question + 1]


def _error_name(error: Any) -> str:
    value = getattr(error, "value", error)  # a Failure, or the exception itself
    return type(value).__name__


class LatencyWindow:
    """Latencies observed since the last ``take()``: for the dashboard's percentiles."""

    def __init__(self, limit: int = 20000) -> None:
        self.limit = limit
        self.values: list[float] = []

    def add(self, seconds: float) -> None:
        if len(self.values) < self.limit:
            bisect.insort(self.values, seconds)

    def take(self) -> dict[str, float | int | None]:
        """``{"count", "p50", "p95", "max"}`` of the window (seconds), and a new window."""
        values, self.values = self.values, []
        if not values:
            return {"count": 0, "p50": None, "p95": None, "max": None}

        def at(share: float) -> float:
            return values[min(int(share * len(values)), len(values) - 1)]

        return {"count": len(values), "p50": at(0.5), "p95": at(0.95), "max": values[-1]}


class ServerMetrics:
    """The metrics of ``server``; ``render()`` is the ``/metrics`` body."""

    def __init__(self, server: Server, latest: Callable[[], Any] | None = None) -> None:
        self.server = server
        self.latest = latest or (lambda: None)  # -> (snapshot, taken_at_monotonic) or None
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.requests = Counter(f"{PREFIX}_http_requests", "HTTP responses, by status code.",
                                ["status"], registry=registry)
        self.request_seconds = Histogram(
            f"{PREFIX}_http_request_duration_seconds",
            "Seconds from a request's arrival to the end of its response.",
            buckets=LATENCY_BUCKETS, registry=registry)
        self.first_reply_seconds = Histogram(
            f"{PREFIX}_http_first_reply_seconds",
            "Seconds from sending a request's http.request message to its first reply "
            "(queue wait plus consumer time).", buckets=LATENCY_BUCKETS, registry=registry)
        self.handshakes = Counter(f"{PREFIX}_websocket_handshakes",
                                  "WebSocket handshakes, by the status answered (101 accepted).",
                                  ["status"], registry=registry)
        self.accept_seconds = Histogram(
            f"{PREFIX}_websocket_accept_seconds",
            "Seconds from sending websocket.connect to the application's answer.",
            buckets=LATENCY_BUCKETS, registry=registry)
        self.websocket_messages = Counter(f"{PREFIX}_websocket_messages",
                                          "WebSocket messages, in (from clients) and out.",
                                          ["direction"], registry=registry)
        self.sent = Counter(f"{PREFIX}_layer_messages_sent",
                            "Messages this server sent to the layer, by channel.",
                            ["channel"], registry=registry)
        self.replies = Counter(f"{PREFIX}_layer_replies_received",
                               "Replies this server received on its reply prefix.",
                               registry=registry)
        self.layer_errors = Counter(f"{PREFIX}_layer_errors",
                                    "Failed layer operations, by operation and error.",
                                    ["operation", "error"], registry=registry)
        # Labelled children looked up once: ``labels()`` takes a lock and builds a key,
        # several times per WebSocket round trip otherwise.
        self._ws_in = self.websocket_messages.labels("in")
        self._ws_out = self.websocket_messages.labels("out")
        self._sent_by_channel: dict[str, Any] = {}
        self.latencies = LatencyWindow()
        self.requests_seen = 0
        #: Paths whose requests are not counted (the operations endpoints themselves).
        self.skip_paths: Container[str] = ()
        registry.register(_Collector(self))

    # -- hooks (called by Server) -------------------------------------------------

    def message_sent(self, channel: str) -> None:
        label = channel_label(channel)
        counter = self._sent_by_channel.get(label)
        if counter is None:
            counter = self._sent_by_channel[label] = self.sent.labels(label)
        counter.inc()
        if channel == "websocket.receive":
            self._ws_in.inc()

    def reply_received(self, target: Any, message: Any, now: float) -> None:
        self.replies.inc()
        if not isinstance(message, dict):
            return
        if message.get("text") is not None or message.get("bytes") is not None:
            self._ws_out.inc()
        if getattr(target, "response_started", None) is False:
            waited = max(now - target.waiting_since, 0.0)
            self.first_reply_seconds.observe(waited)
            self.latencies.add(waited)
        elif getattr(target, "handshake", None) is not None and "accept" in message:
            self.accept_seconds.observe(max(now - target.connect_started_at, 0.0))

    def access(self, record: AccessRecord) -> None:
        if record.protocol == "websocket":
            self.handshakes.labels(str(record.status)).inc()
            return
        if record.path.partition("?")[0] in self.skip_paths:
            return
        self.requests_seen += 1
        self.requests.labels(str(record.status)).inc()
        self.request_seconds.observe(record.duration)

    def layer_error(self, operation: str, error: Any) -> None:
        self.layer_errors.labels(operation, _error_name(error)).inc()

    # -- output -------------------------------------------------------------------

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _Collector:
    """Gauges read at scrape time: this server's state, and the latest snapshot."""

    def __init__(self, metrics: ServerMetrics) -> None:
        self.metrics = metrics

    def describe(self) -> list[Any]:
        return []  # collected fresh each scrape; nothing to check at registration

    def collect(self) -> Iterator[Any]:
        stats = self.metrics.server.statistics()
        gauges = {"http_connections": ("http_connections", "Open HTTP connections."),
                  "http_requests_in_flight": ("http_requests_in_flight", "HTTP requests "
                                              "waiting for or receiving a response."),
                  "websockets": ("websocket_connections", "Open (or handshaking) WebSockets."),
                  "sends_in_flight": ("layer_sends_in_flight",
                                      "Sends to the layer not yet done.")}
        for key, (name, doc) in gauges.items():
            yield GaugeMetricFamily(f"{PREFIX}_{name}", doc, value=stats.get(key, 0))
        events = CounterMetricFamily(f"{PREFIX}_server_events",
                                     "This server's event counters (Server.stats).",
                                     labels=["event"])
        for event, count in sorted(stats.items()):
            if isinstance(count, int) and event not in gauges:
                events.add_metric([event], count)
        yield events
        yield from self._deployment()

    def _deployment(self) -> Iterator[Any]:
        latest = self.metrics.latest()
        up = GaugeMetricFamily(f"{PREFIX}_layer_up",
                               "1 if the last look at the layer (snapshot) succeeded.")
        if latest is None or latest.snapshot is None:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1 if latest.error is None else 0)
        yield up
        snap, now = latest.snapshot, latest.layer_now()
        yield GaugeMetricFamily(f"{PREFIX}_snapshot_age_seconds",
                                "Seconds since the layer figures below were read.",
                                value=max(now - snap.taken_at, 0.0))
        gauges = {key: GaugeMetricFamily(f"{PREFIX}_channel_{key}", doc, labels=["channel"])
                  for key, doc in (
                      ("pending", "Messages waiting in the channel (or srv! queue)."),
                      ("capacity", "The channel's capacity."),
                      ("oldest_message_age_seconds", "Age of the oldest waiting message."),
                      ("consumers", "Live processes reading the channel."))}
        counters = {key: CounterMetricFamily(f"{PREFIX}_channel_{key}", doc, labels=["channel"])
                    for key, doc in (
                        ("messages", "Messages sent to the channel (the layer's count)."),
                        ("full", "Sends refused with ChannelFull."),
                        ("expired", "Messages that expired unread."))}
        for channel in snap.channels:
            label = [channel.name]
            gauges["pending"].add_metric(label, channel.pending)
            gauges["capacity"].add_metric(label, channel.capacity)
            gauges["oldest_message_age_seconds"].add_metric(
                label, channel.oldest_age if channel.pending else 0.0)
            gauges["consumers"].add_metric(label, len(channel.consumers))
            counters["messages"].add_metric(label, channel.sent)
            counters["full"].add_metric(label, channel.full)
            counters["expired"].add_metric(label, channel.expired)
        yield from gauges.values()
        yield from counters.values()
        yield from _workers(snap, now)
        servers = GaugeMetricFamily(f"{PREFIX}_interfaceserver_connections",
                                    "Connections of each live interface server.",
                                    labels=["server", "kind"])
        for other in snap.servers:
            servers.add_metric([other.name, "http"], other.http_connections or 0)
            servers.add_metric([other.name, "websocket"], other.websockets or 0)
        yield GaugeMetricFamily(f"{PREFIX}_interfaceservers",
                                "Live interface servers (heartbeat not stale).",
                                value=sum(not other.stale(now) for other in snap.servers))
        yield servers
        if snap.groups is not None:
            yield GaugeMetricFamily(f"{PREFIX}_groups", "Groups with members.",
                                    value=len(snap.groups))
            yield GaugeMetricFamily(f"{PREFIX}_group_members",
                                    "Memberships, summed over every group.",
                                    value=sum(group.size for group in snap.groups))
        problems = GaugeMetricFamily(f"{PREFIX}_problems",
                                     "Problems switchboard status reports, by severity.",
                                     labels=["severity"])
        found = diagnose(snap, now, previous=latest.previous)
        for severity in ("error", "warning", "info"):
            problems.add_metric([severity], sum(p.severity == severity for p in found))
        yield problems


def _workers(snap: Any, now: float) -> Iterator[Any]:
    states = GaugeMetricFamily(f"{PREFIX}_workers",
                               "Registered workers, by state (stale: heartbeat late, not live).",
                               labels=["state"])
    counts = {"busy": 0, "idle": 0, "unknown": 0, "stale": 0}
    for worker in snap.workers:
        counts["stale" if worker.stale(now) else "unknown" if worker.busy is None
               else "busy" if worker.busy else "idle"] += 1
    for state, count in counts.items():
        states.add_metric([state], count)
    yield states
    per = {key: GaugeMetricFamily(f"{PREFIX}_worker_{key}", doc, labels=["worker"])
           for key, doc in (("up", "1 while the worker's heartbeat is current, 0 once stale."),
                            ("threads", "Loop threads of the worker."),
                            ("busy_threads", "Threads running a consumer now."),
                            ("heartbeat_age_seconds", "Seconds since its last heartbeat."))}
    done = {key: CounterMetricFamily(f"{PREFIX}_worker_{key}", doc, labels=["worker"])
            for key, doc in (("messages", "Messages the worker handled."),
                             ("failed", "Messages whose consumer raised."))}
    consumer = {key: CounterMetricFamily(f"{PREFIX}_consumer_{key}", doc,
                                         labels=["worker", "channel"])
                for key, doc in (("messages", "Messages handled, by worker and channel."),
                                 ("seconds", "Seconds consumers ran, by worker and channel."),
                                 ("failed", "Consumers that raised, by worker and channel."))}
    for worker in snap.workers:
        name = [worker.name]
        per["up"].add_metric(name, 0 if worker.stale(now) else 1)
        if worker.threads is not None:
            per["threads"].add_metric(name, worker.threads)
        if worker.busy is not None:
            per["busy_threads"].add_metric(name, worker.busy)
        age = worker.heartbeat_age(now)
        if age is not None:
            per["heartbeat_age_seconds"].add_metric(name, age)
        if worker.processed is not None:
            done["messages"].add_metric(name, worker.processed)
        if worker.failed is not None:
            done["failed"].add_metric(name, worker.failed)
        for channel, (handled, seconds, failed) in sorted(worker.by_channel.items()):
            labels = [worker.name, channel_label(channel)]
            consumer["messages"].add_metric(labels, handled)
            consumer["seconds"].add_metric(labels, seconds)
            consumer["failed"].add_metric(labels, failed)
    yield from per.values()
    yield from done.values()
    yield from consumer.values()
