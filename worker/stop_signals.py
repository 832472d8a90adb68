"""SIGTERM and SIGINT handed to a long-running loop's own stop handler while it runs."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterator
from typing import Any


@contextlib.contextmanager
def stop_signals(handler: Callable[[int, Any], Any], install: bool = True) -> Iterator[None]:
    """Inside the block, SIGTERM and SIGINT call ``handler`` (only with ``install``; without
    it nothing changes); leaving the block, however it ends, puts back the handlers from
    before."""
    previous = {}
    if install:
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, handler)
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
