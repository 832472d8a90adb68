"""Test helpers shipped with the contract: a controllable clock."""

from __future__ import annotations


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
