"""Test helpers shipped with the contract: a controllable clock, and a blocking receive
run in a thread for the tests that wake it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any


class FakeClock:
    """A wall clock that moves only when told to.

    Pass it as a layer's ``clock=``; expiry, group expiry and message ages are
    then decided by ``advance()``, not by sleeping.
    """

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = float(start)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock cannot go back")
        self.now += seconds


class BlockedReceive:
    """A blocking receive in a thread of its own, woken by the body of a ``with``.

    ``with BlockedReceive(lambda: layer.receive(["a"], block=True, timeout=10)) as reader:``
    starts the receive and gives it ``settle`` seconds to block before the body runs
    (a send, say). Leaving the body waits up to ``patience`` seconds for the receive to
    return (not at all if the body raised); then ``reader.results`` is ``[what it
    returned]``, or ``[]`` if it has not returned, and ``reader.waited`` the seconds
    from the start of the body until then.
    """

    def __init__(self, receive: Callable[[], Any], settle: float = 0.05,
                 patience: float = 10.0) -> None:
        self.results: list[Any] = []
        self.waited = 0.0
        self._settle = settle
        self._patience = patience
        self._thread = threading.Thread(target=lambda: self.results.append(receive()))
        self._started = 0.0

    def __enter__(self) -> BlockedReceive:
        self._thread.start()
        time.sleep(self._settle)
        self._started = time.monotonic()
        return self

    def __exit__(self, exc_type: Any, exc: Any, traceback: Any) -> None:
        if exc_type is None:
            self._thread.join(self._patience)
            self.waited = time.monotonic() - self._started
