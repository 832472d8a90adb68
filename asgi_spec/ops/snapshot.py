"""``snapshot(layer)``: one consistent-enough look at a running deployment.

How this works: everything comes from the layer, through the public API only,
so it works on every backend and on any machine that can reach the layer:

* the process registry (``live_processes``) gives the registered workers and
  interface servers, with the info each publishes in its heartbeat (see
  ``asgi_spec.registry`` for the keys; a missing key reads as unknown). One
  whose heartbeat is stale (``registry.is_stale``: older than 0.6 of its
  heartbeat interval) is still listed, as ``stale``, but consumes nothing: a
  killed worker shows up within one heartbeat interval, long before its
  registration expires;
* ``channel_statistics`` is asked for every channel worth showing: the ones
  asked for, the concrete names the workers consume (globs cannot be asked
  about), each server's reply prefix ``<server-id>!``, and -- when an
  interface server is live -- the channels servers send to
  (``http.request``, ``websocket.connect`` ...) if someone consumes them or
  they have seen traffic;
* ``groups()`` (the statistics extension) lists the groups, and
  ``group_channels`` sizes each one (members kept only on request).

The result is a tree of frozen dataclasses holding absolute times (the layer's
clock), so ``asgi_spec.ops.diagnose`` can judge it against any ``now`` and
tests can build one by hand. ``Snapshot.to_dict`` is the JSON form.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from asgi_spec import formats, names, registry
from asgi_spec.exceptions import InvalidChannelName

#: The channels interface servers send to: shown whenever a server is live
#: and someone consumes them or they have carried messages.
SERVER_CHANNELS = (
    formats.HTTP_REQUEST,
    formats.HTTP_DISCONNECT,
    formats.WEBSOCKET_CONNECT,
    formats.WEBSOCKET_RECEIVE,
    formats.WEBSOCKET_DISCONNECT,
)

#: The channel without which an interface server can answer no request.
HTTP_REQUEST = formats.HTTP_REQUEST


def _num(info: Mapping[str, Any], key: str, default: float | None = None) -> Any:
    value = info.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return default
    return value


def _text(info: Mapping[str, Any], key: str) -> str | None:
    value = info.get(key)
    return value if isinstance(value, str) else None


def _age(now: float, then: float | None) -> float | None:
    return None if then is None else max(now - then, 0.0)


def _stale(now: float, heartbeat_at: float | None, interval: float | None) -> bool:
    """The heartbeat sent at ``heartbeat_at`` is stale at ``now`` (False when unknown)."""
    age = _age(now, heartbeat_at)
    return age is not None and age > registry.stale_after(interval)


@dataclass(frozen=True)
class ChannelStatus:
    """One queue: a channel, or a process-specific prefix ``srv!``."""

    name: str
    pending: int
    oldest_age: float  # seconds the oldest pending message had waited at ``taken_at``
    capacity: int
    sent: int = 0  # messages_count
    full: int = 0  # channel_full_count
    expired: int = 0  # messages_expired_count
    dropped: int = 0  # group_send_dropped_count
    consumers: tuple[str, ...] = ()  # live workers (or, for ``srv!``, the server) reading it

    @property
    def fill(self) -> float:
        """``pending / capacity`` (0.0 .. 1.0)."""
        return self.pending / self.capacity if self.capacity else 0.0

    @property
    def process_specific(self) -> bool:
        return self.name.endswith("!")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "pending": self.pending, "oldest_age": self.oldest_age,
            "capacity": self.capacity, "fill": self.fill, "sent": self.sent,
            "channel_full": self.full, "expired": self.expired,
            "group_send_dropped": self.dropped, "consumers": list(self.consumers),
        }


@dataclass(frozen=True)
class GroupStatus:
    name: str
    size: int
    members: tuple[str, ...] | None = None  # only when asked for

    def to_dict(self) -> dict[str, Any]:
        found: dict[str, Any] = {"name": self.name, "size": self.size}
        if self.members is not None:
            found["members"] = list(self.members)
        return found


@dataclass(frozen=True)
class WorkerStatus:
    """A live worker, as its last heartbeat described it."""

    name: str
    channels: tuple[str, ...] | None  # None: it consumes everything
    host: str | None = None
    pid: int | None = None
    threads: int | None = None
    busy: int | None = None
    current: str | None = None
    current_since: float | None = None
    processed: int | None = None
    failed: int | None = None
    started_at: float | None = None
    heartbeat_at: float | None = None
    heartbeat_interval: float | None = None
    by_channel: Mapping[str, tuple[int, float, int]] = field(default_factory=dict)

    @classmethod
    def from_info(cls, name: str, info: Any) -> WorkerStatus:
        if not isinstance(info, dict):
            return cls(name=name, channels=())
        raw = info.get("channels")
        if "channels" not in info:
            channels: tuple[str, ...] | None = None
        elif isinstance(raw, list | tuple):
            channels = tuple(c for c in raw if isinstance(c, str))
        else:
            channels = ()
        by_channel: dict[str, tuple[int, float, int]] = {}
        raw_timings = info.get("by_channel")
        if isinstance(raw_timings, dict):
            for channel, timing in raw_timings.items():
                if (isinstance(channel, str) and isinstance(timing, list | tuple)
                        and len(timing) >= 3
                        and all(isinstance(v, int | float) for v in timing[:3])):
                    by_channel[channel] = (int(timing[0]), float(timing[1]), int(timing[2]))
        busy = info.get("busy")
        if isinstance(busy, bool):  # very old workers published a flag
            busy = int(busy)
        return cls(
            name=name, channels=channels, host=_text(info, "host"), pid=_num(info, "pid"),
            threads=_num(info, "threads"), busy=busy if isinstance(busy, int) else None,
            current=_text(info, "current"), current_since=_num(info, "current_since"),
            processed=_num(info, "processed"), failed=_num(info, "failed"),
            started_at=_num(info, "started_at"), heartbeat_at=_num(info, "heartbeat_at"),
            heartbeat_interval=_num(info, "heartbeat_interval"), by_channel=by_channel,
        )

    def consumes(self, channel: str) -> bool:
        info = {} if self.channels is None else {"channels": list(self.channels)}
        return registry.consumes(info, channel)

    @property
    def idle(self) -> bool | None:
        return None if self.busy is None else self.busy == 0

    @property
    def state(self) -> str:
        if self.busy is None:
            return "unknown"
        if self.busy == 0:
            return "idle"
        return "busy" if self.threads in (None, 1) else f"busy {self.busy}/{self.threads}"

    def stale(self, now: float) -> bool:
        """Its heartbeat is stale at ``now``: killed or hung, no longer counted as live."""
        return _stale(now, self.heartbeat_at, self.heartbeat_interval)

    def state_at(self, now: float) -> str:
        """``stale`` when its heartbeat is, otherwise ``state``."""
        return "stale" if self.stale(now) else self.state

    def current_age(self, now: float) -> float | None:
        return _age(now, self.current_since) if self.current else None

    def heartbeat_age(self, now: float) -> float | None:
        return _age(now, self.heartbeat_at)

    def uptime(self, now: float) -> float | None:
        return _age(now, self.started_at)

    def to_dict(self, now: float) -> dict[str, Any]:
        return {
            "name": self.name, "host": self.host, "pid": self.pid,
            "channels": None if self.channels is None else list(self.channels),
            "threads": self.threads, "busy": self.busy, "state": self.state_at(now),
            "stale": self.stale(now),
            "current": self.current, "current_age": self.current_age(now),
            "processed": self.processed, "failed": self.failed,
            "heartbeat_age": self.heartbeat_age(now),
            "heartbeat_interval": self.heartbeat_interval, "uptime": self.uptime(now),
            "by_channel": {channel: {"handled": t[0], "seconds": t[1], "failed": t[2]}
                           for channel, t in self.by_channel.items()},
        }


@dataclass(frozen=True)
class ServerStatus:
    """A live interface server, as its last heartbeat described it."""

    name: str
    host: str | None = None
    pid: int | None = None
    reply_prefix: str | None = None
    listening: tuple[str, ...] = ()
    http_connections: int | None = None
    websockets: int | None = None
    requests_in_flight: int | None = None
    connections: int | None = None
    started_at: float | None = None
    heartbeat_at: float | None = None
    heartbeat_interval: float | None = None
    stats: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def from_info(cls, name: str, info: Any) -> ServerStatus:
        if not isinstance(info, dict):
            return cls(name=name)
        listening = info.get("listening")
        stats = info.get("stats")
        return cls(
            name=name, host=_text(info, "host"), pid=_num(info, "pid"),
            reply_prefix=_text(info, "reply_prefix"),
            listening=tuple(x for x in listening if isinstance(x, str))
            if isinstance(listening, list | tuple) else (),
            http_connections=_num(info, "http_connections"),
            websockets=_num(info, "websockets"),
            requests_in_flight=_num(info, "http_requests_in_flight"),
            connections=_num(info, "connections"), started_at=_num(info, "started_at"),
            heartbeat_at=_num(info, "heartbeat_at"),
            heartbeat_interval=_num(info, "heartbeat_interval"),
            stats={k: v for k, v in stats.items() if isinstance(k, str)
                   and isinstance(v, int) and not isinstance(v, bool)}
            if isinstance(stats, dict) else {},
        )

    def heartbeat_age(self, now: float) -> float | None:
        return _age(now, self.heartbeat_at)

    def stale(self, now: float) -> bool:
        """Its heartbeat is stale at ``now``: killed or hung."""
        return _stale(now, self.heartbeat_at, self.heartbeat_interval)

    def uptime(self, now: float) -> float | None:
        return _age(now, self.started_at)

    def to_dict(self, now: float) -> dict[str, Any]:
        return {
            "name": self.name, "host": self.host, "pid": self.pid, "stale": self.stale(now),
            "reply_prefix": self.reply_prefix, "listening": list(self.listening),
            "http_connections": self.http_connections, "websockets": self.websockets,
            "requests_in_flight": self.requests_in_flight, "connections": self.connections,
            "heartbeat_age": self.heartbeat_age(now),
            "heartbeat_interval": self.heartbeat_interval, "uptime": self.uptime(now),
            "stats": dict(self.stats),
        }


@dataclass(frozen=True)
class Snapshot:
    """What the layer said at ``taken_at`` (the layer's clock)."""

    taken_at: float
    layer: str = ""
    expiry: float | None = None
    totals: Mapping[str, Any] = field(default_factory=dict)
    channels: tuple[ChannelStatus, ...] = ()
    groups: tuple[GroupStatus, ...] | None = ()  # None: the layer cannot list groups
    workers: tuple[WorkerStatus, ...] = ()
    servers: tuple[ServerStatus, ...] = ()
    has_registry: bool = True
    notes: tuple[str, ...] = ()  # what could not be read, in plain words

    def channel(self, name: str) -> ChannelStatus | None:
        for status in self.channels:
            if status.name == name:
                return status
        return None

    def live_workers(self, now: float | None = None) -> list[WorkerStatus]:
        """The workers whose heartbeat is not stale at ``now`` (default ``taken_at``)."""
        now = self.taken_at if now is None else now
        return [worker for worker in self.workers if not worker.stale(now)]

    def consumers_of(self, channel: str, now: float | None = None) -> list[WorkerStatus]:
        """The live workers (not stale at ``now``, default ``taken_at``) that consume
        ``channel``."""
        return [worker for worker in self.live_workers(now) if worker.consumes(channel)]

    def consumer_seconds(self, channel: str) -> tuple[int, float]:
        """``(handled, seconds)`` summed over the live workers' ``by_channel``."""
        handled, seconds = 0, 0.0
        for worker in self.workers:
            timing = worker.by_channel.get(channel)
            if timing is not None:
                handled += timing[0]
                seconds += timing[1]
        return handled, seconds

    def to_dict(self, now: float | None = None) -> dict[str, Any]:
        """The JSON form; ages are measured at ``now`` (default ``taken_at``)."""
        now = self.taken_at if now is None else now
        return {
            "taken_at": self.taken_at, "layer": self.layer, "expiry": self.expiry,
            "totals": dict(self.totals),
            "channels": [channel.to_dict() for channel in self.channels],
            "groups": None if self.groups is None else [g.to_dict() for g in self.groups],
            "workers": [worker.to_dict(now) for worker in self.workers],
            "servers": [server.to_dict(now) for server in self.servers],
            "has_registry": self.has_registry, "notes": list(self.notes),
        }


def _queue_name(name: str) -> str | None:
    """``name`` as a queue statistics can be asked about, or None (a glob, say)."""
    try:
        names.validate_channel_name(name, receive=True)
    except InvalidChannelName:
        return None
    return names.non_local_name(name)


def _channel_status(layer: Any, name: str, consumers: Iterable[str]) -> ChannelStatus:
    stats = layer.channel_statistics(name)
    capacity = stats.get("capacity")
    if not isinstance(capacity, int):
        capacity = layer.get_capacity(name) if hasattr(layer, "get_capacity") else 0
    return ChannelStatus(
        name=name, pending=int(stats.get("messages_pending", 0)),
        oldest_age=float(stats.get("messages_max_age", 0.0)), capacity=int(capacity),
        sent=int(stats.get("messages_count", 0)), full=int(stats.get("channel_full_count", 0)),
        expired=int(stats.get("messages_expired_count", 0)),
        dropped=int(stats.get("group_send_dropped_count", 0)),
        consumers=tuple(consumers),
    )


def snapshot(layer: Any, *, channels: Iterable[str] | None = None,
             members: bool = False) -> Snapshot:
    """Look at ``layer``: its channels, groups, workers and interface servers.

    ``channels`` adds channels (or ``prefix!`` queues) to the ones chosen
    automatically; an invalid name raises ``InvalidChannelName``. With
    ``members`` each group lists its member channels. The layer's own errors
    (``LayerUnavailable`` ...) propagate: no snapshot is better than a wrong one.
    """
    asked = [names.non_local_name(names.validate_channel_name(
        name, receive=isinstance(name, str) and name.endswith("!"))) for name in channels or ()]
    clock = getattr(layer, "clock", time.time)
    taken_at = clock()
    notes: list[str] = []
    has_reg = registry.has_registry(layer)
    workers: list[WorkerStatus] = []
    servers: list[ServerStatus] = []
    if has_reg:
        workers = [WorkerStatus.from_info(name, info) for name, info in
                   sorted(layer.live_processes(registry.KIND_WORKER).items())]
        servers = [ServerStatus.from_info(name, info) for name, info in
                   sorted(layer.live_processes(registry.KIND_INTERFACESERVER).items())]
    else:
        notes.append("the layer has no registry extension: workers and servers are invisible")

    def consumers(name: str) -> list[str]:
        if name.endswith("!"):
            return [s.name for s in servers if s.reply_prefix == name]
        return [w.name for w in workers if w.consumes(name) and not w.stale(taken_at)]

    wanted: dict[str, bool] = {}  # name -> always show (False: only if it matters)
    for name in asked:
        wanted[name] = True
    for worker in workers:
        for pattern in worker.channels or ():
            queue = _queue_name(pattern)
            if queue is not None:
                wanted.setdefault(queue, True)
    for server in servers:
        if server.reply_prefix and _queue_name(server.reply_prefix):
            wanted.setdefault(names.non_local_name(server.reply_prefix), True)
    if servers:
        for name in SERVER_CHANNELS:
            wanted.setdefault(name, name == HTTP_REQUEST)
    found: list[ChannelStatus] = []
    for name, always in wanted.items():
        status = _channel_status(layer, name, consumers(name))
        if always or status.consumers or status.pending or status.sent:
            found.append(status)
    found.sort(key=lambda c: (c.process_specific, c.name))

    groups: list[GroupStatus] | None = []
    try:
        group_names = layer.groups()
    except (NotImplementedError, AttributeError):
        groups = None
        notes.append("the layer cannot list its groups")
    else:
        for group in group_names:
            channels_of = layer.group_channels(group)
            if channels_of:
                groups.append(GroupStatus(group, len(channels_of),
                                          tuple(channels_of) if members else None))
    totals = dict(layer.global_statistics())
    expiry = getattr(layer, "expiry", None)
    return Snapshot(
        taken_at=taken_at, layer=repr(layer),
        expiry=float(expiry) if isinstance(expiry, int | float) else None,
        totals=totals, channels=tuple(found),
        groups=None if groups is None else tuple(groups),
        workers=tuple(workers), servers=tuple(servers), has_registry=has_reg,
        notes=tuple(notes),
    )
