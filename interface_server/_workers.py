"""``WorkerView``: does any live worker consume a channel? A cached, pure answer.

How this works: workers register in the layer's registry (kind ``"worker"``)
with a heartbeat and ``info["channels"]``, the channel names or globs they
consume. The server asks ``registry.fresh_processes(layer, "worker")`` (stale
heartbeats left out) off the reactor thread every ``refresh_interval``, and on
demand no more often, and stores the answer here.
``consumes(channel)`` is then a walk over the cached infos, with the
matching rule of ``asgi_spec.registry.consumes``:

* ``True``: a worker's heartbeat is current and it consumes the channel;
* ``False``: the registry answered and no one consumes it (answer 503 now);
* ``None``: unknown (never loaded, or the last refresh failed): let the
  request through; the send itself will report a layer outage.

After a layer outage the registry may have lost its entries (a Redis
restarted without persistence comes back empty) while the workers are alive
and about to re-register with their next heartbeat. So for ``recovery_grace``
seconds after the server last found the layer unavailable (a failed send,
receive, refresh or heartbeat: ``doubt``), an answer in which nobody consumes
the channel is ``None``, not ``False``: requests are let through instead of
being refused with "no worker" by a registry that may not be refilled yet.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from asgi_spec import registry

#: Seconds after a layer failure during which "nobody consumes" is doubted:
#: one worker heartbeat period, plus room for the refreshes around it.
RECOVERY_GRACE = registry.HEARTBEAT_INTERVAL + 2.0


class WorkerView:
    def __init__(self, refresh_interval: float = 1.0,
                 recovery_grace: float = RECOVERY_GRACE) -> None:
        self.refresh_interval = refresh_interval
        self.recovery_grace = recovery_grace
        self._infos: list[Any] | None = None
        self.loaded_at: float | None = None
        self._cache: dict[str, bool] = {}
        self._failed_at: float | None = None

    def update(self, now: float, processes: Mapping[str, Mapping[str, Any]]) -> None:
        """Store a fresh ``live_processes("worker")`` answer."""
        self._infos = list(processes.values())
        self.loaded_at = now
        self._cache = {}

    def failed(self, now: float) -> None:
        """The registry could not be read: the view is unknown until the next refresh."""
        self._infos = None
        self.loaded_at = now
        self._cache = {}
        self.doubt(now)

    def doubt(self, now: float) -> None:
        """The layer failed at ``now``: its registry may come back emptied."""
        self._failed_at = now

    def is_stale(self, now: float) -> bool:
        """``True`` if a refresh is allowed (the last one is old enough)."""
        return self.loaded_at is None or now - self.loaded_at >= self.refresh_interval

    def consumes(self, channel: str) -> bool | None:
        """Whether some live worker consumes ``channel`` (None: unknown)."""
        if self._infos is None:
            return None
        known = self._cache.get(channel)
        if known is None:
            known = self._cache[channel] = any(
                registry.consumes(info, channel) for info in self._infos
            )
        if not known and self.doubtful:
            return None  # maybe only not re-registered yet after an outage
        return known

    @property
    def doubtful(self) -> bool:
        """The answer was loaded less than ``recovery_grace`` after a layer failure."""
        return (self._failed_at is not None and self.loaded_at is not None
                and self.loaded_at - self._failed_at < self.recovery_grace)

    @property
    def worker_count(self) -> int | None:
        return None if self._infos is None else len(self._infos)
