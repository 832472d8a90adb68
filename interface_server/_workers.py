"""``WorkerView``: does any live worker consume a channel? A cached, pure answer.

How this works: workers register in the layer's registry (kind ``"worker"``)
with a heartbeat and ``info["channels"]``, the channel names or globs they
consume. The server asks ``layer.live_processes("worker")`` off the reactor
thread, at most once per ``refresh_interval``, and stores the answer here.
``consumes(channel)`` is then a walk over the cached infos, with the
matching rule of ``asgi_spec.registry.consumes``:

* ``True``: a worker's heartbeat is current and it consumes the channel;
* ``False``: the registry answered and no one consumes it (answer 503 now);
* ``None``: unknown (never loaded, or the last refresh failed): let the
  request through; the send itself will report a layer outage.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from asgi_spec import registry


class WorkerView:
    def __init__(self, refresh_interval: float = 1.0) -> None:
        self.refresh_interval = refresh_interval
        self._infos: list[Any] | None = None
        self.loaded_at: float | None = None
        self._cache: dict[str, bool] = {}

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
        return known

    @property
    def worker_count(self) -> int | None:
        return None if self._infos is None else len(self._infos)
