"""Who consumes what: the shared reading of the layer's process registry.

Workers announce themselves with ``layer.register_process(KIND_WORKER, name,
info, HEARTBEAT_TTL)`` every ``HEARTBEAT_INTERVAL`` seconds; ``info`` holds at
least ``{"channels": [...]}``. The interface server asks ``live_consumers``
before making a client wait for a worker, and answers 503 at once when nobody
consumes the channel. Both sides use this module, so neither imports the other.

Worker ``info`` keys (all written by ``worker``): ``channels`` (the channel
names, or ``fnmatch`` globs, it receives from; a worker whose info has no
``channels`` key is taken to consume every channel), ``host``, ``pid``,
``threads``, ``started_at`` (epoch seconds), ``processed`` (messages
handled), ``busy`` (threads running a consumer now), ``current`` (the
channel of the longest-running message being handled, or ``None``),
``current_since`` (when that message started, or ``None``), ``failed``
(messages whose consumer raised), ``by_channel`` (``{channel: [handled,
seconds spent, failed]}``), ``heartbeat_at`` (the layer's clock when it
sent this info) and ``heartbeat_interval`` (seconds between its heartbeats).

Interface server ``info`` keys (written by ``interface_server``): ``host``,
``pid``, ``reply_prefix`` (the ``<server-id>!`` queue its replies arrive on),
``listening``, ``connections``, ``http_connections``,
``http_requests_in_flight``, ``websockets``, ``started_at``,
``heartbeat_at`` (the layer's clock) and ``heartbeat_interval``.

Every key but ``channels`` is informational: readers (``asgi_spec.ops``)
treat a missing one as unknown, so older processes still show up.
"""

from __future__ import annotations

import fnmatch
from typing import Any

#: The registry ``kind`` that workers register under.
KIND_WORKER = "worker"

#: The registry ``kind`` that interface servers register under.
KIND_INTERFACESERVER = "interfaceserver"

#: Seconds between two heartbeats of a worker.
HEARTBEAT_INTERVAL = 5.0

#: Seconds a heartbeat stays valid: three missed beats and the worker is gone.
HEARTBEAT_TTL = 3 * HEARTBEAT_INTERVAL

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


def has_registry(layer: Any) -> bool:
    """``True`` if ``layer`` provides the ``registry`` extension."""
    return REGISTRY_EXTENSION in getattr(layer, "extensions", ())


def live_consumers(layer: Any, channel: str) -> dict[str, dict[str, Any]]:
    """``{name: info}`` of the live workers that consume ``channel`` (may be empty).

    Raises ``NotImplementedError`` when the layer has no ``registry``
    extension (then nobody can tell; check ``has_registry`` first), and lets
    the layer's own errors (``LayerUnavailable``) through.
    """
    if not has_registry(layer):
        raise NotImplementedError(
            f"layer {layer!r} has no {REGISTRY_EXTENSION!r} extension: "
            "cannot tell which workers are running"
        )
    workers = layer.live_processes(KIND_WORKER)
    return {name: info for name, info in workers.items() if consumes(info, channel)}
