"""Bounded exponential backoff, as plain arithmetic (the caller does the sleeping)."""

from __future__ import annotations

from collections.abc import Iterator


def retry_delays(initial: float = 0.01, factor: float = 2.0, maximum: float = 0.5,
                 total: float = 2.0) -> Iterator[float]:
    """Delays that grow by ``factor`` up to ``maximum`` and add up to ``total`` exactly."""
    spent = 0.0
    delay = initial
    while spent < total:
        step = min(delay, maximum, total - spent)
        spent += step
        yield step
        delay *= factor


class Backoff:
    """An unbounded series of delays capped at ``maximum``; ``reset()`` after a success."""

    def __init__(self, initial: float = 0.1, factor: float = 2.0, maximum: float = 5.0) -> None:
        self.initial = initial
        self.factor = factor
        self.maximum = maximum
        self.failures = 0

    def next_delay(self) -> float:
        """The delay to wait before the next attempt; each call counts one failure."""
        delay = min(self.initial * self.factor ** self.failures, self.maximum)
        self.failures += 1
        return delay

    def reset(self) -> None:
        self.failures = 0
