"""Seeing inside a running deployment: snapshots, diagnoses, reports.

Everything here reads the channel layer through its public API (the
``statistics``, ``groups`` and ``registry`` extensions), imports neither
Twisted nor Django, and -- but for ``cli`` -- is pure, so the status
command, the interface server's ``/metrics`` and its dashboard all show the
same numbers::

    from asgi_spec import layer_from_url
    from asgi_spec.ops import diagnose, snapshot

    layer = layer_from_url("redis://localhost:6379/0")
    look = snapshot(layer)
    for problem in diagnose(look, layer.clock()):
        print(problem.severity, problem.message)
"""

from asgi_spec.ops.diagnose import (
    DEFAULT_THRESHOLDS,
    ERROR,
    INFO,
    WARNING,
    Problem,
    Thresholds,
    diagnose,
    healthy,
)
from asgi_spec.ops.render import render_json, render_text, status_dict
from asgi_spec.ops.snapshot import (
    SERVER_CHANNELS,
    ChannelStatus,
    GroupStatus,
    ServerStatus,
    Snapshot,
    WorkerStatus,
    snapshot,
)

__all__ = [
    "DEFAULT_THRESHOLDS",
    "ERROR",
    "INFO",
    "SERVER_CHANNELS",
    "WARNING",
    "ChannelStatus",
    "GroupStatus",
    "Problem",
    "ServerStatus",
    "Snapshot",
    "Thresholds",
    "WorkerStatus",
    "diagnose",
    "healthy",
    "render_json",
    "render_text",
    "snapshot",
    "status_dict",
]
