"""Tests for ``worker.supervisor``: restart with backoff, and a bounded, forwarded shutdown."""

from __future__ import annotations

import signal
import subprocess

from asgi_spec.testing import FakeClock
from worker.supervisor import Supervisor


class FakeProcess:
    """A child process whose exit the test decides."""

    pids = iter(range(1000, 2000))

    def __init__(self, command, stops_on_term=True):
        self.command = command
        self.pid = next(self.pids)
        self.code = None
        self.signals = []
        self.stops_on_term = stops_on_term
        self.killed = False

    def poll(self):
        return self.code

    def send_signal(self, signum):
        self.signals.append(signum)
        if self.stops_on_term:
            self.code = 0

    def wait(self, timeout=None):
        if self.code is None and not self.killed:
            raise subprocess.TimeoutExpired(self.command, timeout)
        return self.code

    def kill(self):
        self.killed = True
        self.code = -9


def supervisor(n=2, **options):
    spawned = []
    process_options = options.pop("process_options", {})

    def spawn(command):
        spawned.append(FakeProcess(command, **process_options))
        return spawned[-1]

    clock = FakeClock(0)
    sup = Supervisor([["cmd", str(i)] for i in range(n)], spawn=spawn, clock=clock,
                     stable_after=30, shutdown_timeout=5, **options)
    return sup, spawned, clock


def test_start_spawns_one_child_per_command():
    """start() spawns a child per command, in order."""
    sup, spawned, _ = supervisor(3)
    sup.start()
    assert [p.command for p in spawned] == [["cmd", "0"], ["cmd", "1"], ["cmd", "2"]]


def test_dead_child_is_restarted_after_growing_backoff_that_resets_when_stable():
    """A crashing child restarts after 1 s, then 2 s; after a stable run the delay is 1 s again."""
    sup, spawned, clock = supervisor(1)
    sup.start()
    spawned[-1].code = 1
    sup.poll_once()
    assert len(spawned) == 1  # waiting out the backoff
    clock.advance(1)
    sup.poll_once()
    assert len(spawned) == 2
    spawned[-1].code = 1
    sup.poll_once()
    clock.advance(1.5)
    sup.poll_once()
    assert len(spawned) == 2  # the second delay is 2 s
    clock.advance(0.5)
    sup.poll_once()
    assert len(spawned) == 3
    clock.advance(60)  # this child ran long enough to count as stable
    spawned[-1].code = 1
    sup.poll_once()
    clock.advance(1)
    sup.poll_once()
    assert len(spawned) == 4 and sup.restarts == 3


def test_live_children_are_left_alone():
    """poll_once() does nothing while every child runs."""
    sup, spawned, clock = supervisor(2)
    sup.start()
    clock.advance(100)
    sup.poll_once()
    assert len(spawned) == 2


def test_stop_forwards_sigterm_and_returns_0_when_children_exit_cleanly():
    """stop() sends SIGTERM to each child and returns 0 when all exit 0."""
    sup, spawned, _ = supervisor(2)
    sup.start()
    assert sup.stop() == 0
    assert [p.signals for p in spawned] == [[signal.SIGTERM], [signal.SIGTERM]]


def test_stop_kills_a_child_that_overruns_and_returns_1():
    """A child still running after shutdown_timeout is killed and the exit code is 1."""
    sup, spawned, _ = supervisor(1, process_options={"stops_on_term": False})
    sup.start()
    assert sup.stop() == 1
    assert spawned[0].killed


def test_no_restarts_while_stopping():
    """A child that exits during shutdown is not restarted."""
    sup, spawned, clock = supervisor(1)
    sup.start()
    sup._stopping.set()
    spawned[0].code = 0
    clock.advance(10)
    sup.poll_once()
    assert len(spawned) == 1
