"""Who consumes what: the shared reading of the layer's process registry.

Workers announce themselves with ``layer.register_process(KIND_WORKER, name,
info, ttl)`` ``BEATS_PER_INTERVAL`` times per heartbeat interval; ``info``
holds at least ``{"channels": [...]}``. The interface server asks which
workers are live before making a client wait for one, and answers 503 at
once when nobody consumes the channel. Both sides use this module, so
neither imports the other.

The heartbeat interval is a promise, not the beat period: a process that
stops beating (SIGKILL, a hung host) is shown stale by every reader -- and
no longer counted as a consumer -- at most one interval after its last beat.
The budget of one interval ``I`` (5 s by default):

* processes beat every ``I / BEATS_PER_INTERVAL`` (1 s), so a beat or two
  late under load is no false alarm;
* a heartbeat older than ``STALE_AFTER * I`` (3 s) is stale (``is_stale``);
  ``fresh_processes`` and ``live_consumers`` leave such processes out;
* readers that cache what they read (the interface server's worker view, its
  metrics and dashboard look) re-read at least every ``CACHE_SHARE * I``
  (1 s), which leaves the rest of the interval for the reads themselves;
* the registration itself lives ``TTL_INTERVALS * I`` (15 s), so a dead
  process is listed as stale for a while before it disappears; a clean
  shutdown (or a supervisor that saw its child die) unregisters at once.

Every process publishes its own ``heartbeat_interval``, and readers judge it
by that. Ages compare the layer's clocks of two machines, so they assume
synchronised clocks, as message expiry does.

Worker ``info`` keys (all written by ``worker``): ``channels`` (the channel
names, or ``fnmatch`` globs, it receives from; a worker whose info has no
``channels`` key is taken to consume every channel), ``host``, ``pid``,
``threads``, ``started_at`` (epoch seconds), ``processed`` (messages
handled), ``busy`` (threads running a consumer now), ``current`` (the
channel of the longest-running message being handled, or ``None``),
``current_since`` (when that message started, or ``None``), ``failed``
(messages whose consumer raised), ``by_channel`` (``{channel: [handled,
seconds spent, failed]}``), ``heartbeat_at`` (the layer's clock when it
sent this info) and ``heartbeat_interval`` (its heartbeat interval, the
promise above).

Interface server ``info`` keys (written by ``interface_server``): ``host``,
``pid``, ``reply_prefix`` (the ``<server-id>!`` queue its replies arrive on),
``listening``, ``connections``, ``http_connections``,
``http_requests_in_flight``, ``websockets``, ``started_at``,
``heartbeat_at`` (the layer's clock) and ``heartbeat_interval``.

Every key but ``channels`` is informational: readers (``asgi_spec.ops``)
treat a missing one as unknown, so older processes still show up (one
without ``heartbeat_at`` is never stale, only gone when its TTL runs out).
"""

from __future__ import annotations

import fnmatch
import time
from typing import Any

#: The registry ``kind`` that workers register under.
KIND_WORKER = "worker"

#: The registry ``kind`` that interface servers register under.
KIND_INTERFACESERVER = "interfaceserver"

#: The heartbeat interval (seconds): a process that stops beating is shown stale,
#: and no longer counted as a consumer, within this long.
HEARTBEAT_INTERVAL = 5.0

#: Heartbeats sent per interval: the beat period is ``interval / BEATS_PER_INTERVAL``.
BEATS_PER_INTERVAL = 5

#: A heartbeat older than this share of its interval is stale (two beats missed
#: and the third late).
STALE_AFTER = 0.6

#: Readers that cache the registry re-read it at least this often (a share of the interval).
CACHE_SHARE = 0.2

#: A registration lives this many intervals after its last heartbeat.
TTL_INTERVALS = 3

#: Seconds a heartbeat stays valid in the registry (the TTL of the default interval).
HEARTBEAT_TTL = TTL_INTERVALS * HEARTBEAT_INTERVAL

#: The layer extension that provides ``register_process``/``live_processes``.
REGISTRY_EXTENSION = "registry"


def consumes(worker_info: object, channel: str) -> bool:
    """``True`` if a worker whose registry ``info`` is ``worker_info`` reads ``channel``.

    ``info["channels"]`` lists channel names or ``fnmatch`` globs; without
    that key the worker is taken to consume everything. Malformed info (not
    a dict, or ``channels`` not a list) consumes nothing.
    """
    if not isinstance(worker_info, dict):
        return False
    if "channels" not in worker_info:
        return True
    channels = worker_info["channels"]
    if not isinstance(channels, list | tuple):
        return False
    return any(isinstance(pattern, str) and fnmatch.fnmatchcase(channel, pattern)
               for pattern in channels)


def beat_period(interval: float) -> float:
    """Seconds between two heartbeats of a process whose heartbeat interval is ``interval``."""
    return interval / BEATS_PER_INTERVAL


def registration_ttl(interval: float) -> float:
    """The ``ttl`` a process with heartbeat interval ``interval`` registers with."""
    return TTL_INTERVALS * interval


def cache_limit(interval: float) -> float:
    """The longest a reader may keep a registry answer (for heartbeat interval ``interval``)."""
    return CACHE_SHARE * interval


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def stale_after(interval: object) -> float:
    """Seconds after its last heartbeat that a process with ``interval`` is stale.

    ``interval`` is what the process published (``info["heartbeat_interval"]``);
    a missing or invalid one reads as ``HEARTBEAT_INTERVAL``.
    """
    seconds = _number(interval)
    if seconds is None or seconds <= 0:
        seconds = HEARTBEAT_INTERVAL
    return STALE_AFTER * seconds


def heartbeat_age(info: object, now: float) -> float | None:
    """Seconds since the heartbeat that wrote ``info`` (None: it carries no ``heartbeat_at``)."""
    at = _number(info.get("heartbeat_at")) if isinstance(info, dict) else None
    return None if at is None else max(now - at, 0.0)


def is_stale(info: object, now: float) -> bool:
    """``True`` if the process whose registry ``info`` this is missed its heartbeats at ``now``.

    Judged by the process's own ``heartbeat_interval``; ``info`` without
    ``heartbeat_at`` (an older process) is never stale.
    """
    age = heartbeat_age(info, now)
    if age is None:
        return False
    assert isinstance(info, dict)
    return age > stale_after(info.get("heartbeat_interval"))


def has_registry(layer: Any) -> bool:
    """``True`` if ``layer`` provides the ``registry`` extension."""
    return REGISTRY_EXTENSION in getattr(layer, "extensions", ())


def fresh_processes(layer: Any, kind: str) -> dict[str, dict[str, Any]]:
    """``{name: info}`` of the processes of ``kind`` whose heartbeat is current (not stale).

    ``live_processes`` keeps a registration for its whole TTL; this leaves out
    the ones that stopped beating, judged by the layer's clock just after the
    read. The layer's errors propagate.
    """
    processes = layer.live_processes(kind)
    now = getattr(layer, "clock", time.time)()
    return {name: info for name, info in processes.items() if not is_stale(info, now)}


def live_consumers(layer: Any, channel: str) -> dict[str, dict[str, Any]]:
    """``{name: info}`` of the live workers that consume ``channel`` (may be empty).

    Live: registered, and its heartbeat is not stale (``fresh_processes``).
    Raises ``NotImplementedError`` when the layer has no ``registry``
    extension (then nobody can tell; check ``has_registry`` first), and lets
    the layer's own errors (``LayerUnavailable``) through.
    """
    if not has_registry(layer):
        raise NotImplementedError(
            f"layer {layer!r} has no {REGISTRY_EXTENSION!r} extension: "
            "cannot tell which workers are running"
        )
    workers = fresh_processes(layer, KIND_WORKER)
    return {name: info for name, info in workers.items() if consumes(info, channel)}
