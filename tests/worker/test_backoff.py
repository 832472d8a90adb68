"""Tests for ``worker.backoff``."""

from __future__ import annotations

import pytest

from worker.backoff import Backoff, retry_delays


def test_retry_delays_grow_are_capped_and_sum_to_the_total():
    """retry_delays doubles up to the cap and the delays add up to exactly the total."""
    delays = list(retry_delays(initial=0.1, factor=2, maximum=0.5, total=2.0))
    assert delays[:3] == [0.1, 0.2, 0.4]
    assert max(delays) == 0.5
    assert sum(delays) == pytest.approx(2.0)


def test_backoff_is_capped_and_resets():
    """Backoff grows exponentially to its maximum, and reset() starts over."""
    backoff = Backoff(initial=1, factor=2, maximum=5)
    assert [backoff.next_delay() for _ in range(5)] == [1, 2, 4, 5, 5]
    backoff.reset()
    assert backoff.next_delay() == 1
