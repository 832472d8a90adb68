"""``runworker --processes N``: keep N worker processes running.

How this works: each of the N slots holds one child process (a ``runworker``
command line). ``poll_once()`` looks at every child: a child that exited while
the supervisor is not stopping is logged and restarted after a per-slot
exponential backoff (1 s, 2 s, ... up to 30 s), reset once a child has stayed
up for ``stable_after`` seconds, so a crash loop cannot spin. A child that
died is also handed to ``on_exit(pid)`` at once: ``runworker`` passes
``registry_cleaner``, which removes the dead child's registry entry, so
``switchboard status`` and the interface servers stop counting it within one
poll instead of waiting for its heartbeat to go stale. ``run()`` calls
``poll_once`` twice a second until SIGTERM/SIGINT; then it forwards SIGTERM to
every child, waits up to ``shutdown_timeout`` for them to finish their current
messages, kills the rest, and returns 0 only if every child exited 0. A second
signal is forwarded too (children exit at once).

Children run in their own session, so a terminal's Ctrl-C reaches only the
supervisor, which forwards one SIGTERM: a child never sees the same shutdown
twice (under systemd, use ``KillMode=mixed`` for the same reason).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from asgi_spec.registry import KIND_WORKER
from worker.backoff import Backoff
from worker.stop_signals import stop_signals

logger = logging.getLogger("worker.supervisor")


def _spawn(command: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(command, start_new_session=True)


def registry_cleaner(open_layer: Callable[[], Any],
                     host: str | None = None) -> Callable[[int], list[str]]:
    """An ``on_exit`` for ``Supervisor``: unregister the workers a dead child left behind.

    The child's entries are the ``worker`` registrations whose info names this
    host and the child's pid (children are named ``host-pid-...`` or
    ``<name>-<n>``, so the pid is what identifies them). ``open_layer()`` is
    called for each death and the layer closed afterwards; the names removed
    are returned. Layer errors propagate (the supervisor logs them).
    """
    here = host or socket.gethostname()

    def forget(pid: int) -> list[str]:
        layer = open_layer()
        try:
            gone = [name for name, info in layer.live_processes(KIND_WORKER).items()
                    if isinstance(info, dict) and info.get("pid") == pid
                    and info.get("host") == here]
            for name in gone:
                layer.unregister_process(KIND_WORKER, name)
            return gone
        finally:
            with contextlib.suppress(Exception):  # closing is best effort
                layer.close()

    return forget


@dataclass
class _Slot:
    index: int
    command: list[str]
    process: Any = None
    started_at: float = 0.0
    restart_at: float | None = None
    backoff: Backoff = field(default_factory=lambda: Backoff(initial=1.0, maximum=30.0))


class Supervisor:
    """Runs one child per command and restarts the ones that die."""

    def __init__(
        self,
        commands: Sequence[Sequence[str]],
        *,
        spawn: Callable[[list[str]], Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
        stable_after: float = 30.0,
        shutdown_timeout: float = 35.0,
        poll_interval: float = 0.5,
        on_exit: Callable[[int], Any] | None = None,
    ) -> None:
        self.slots = [_Slot(n, list(command)) for n, command in enumerate(commands)]
        self.spawn = spawn or _spawn
        self.clock = clock
        self.stable_after = stable_after
        self.shutdown_timeout = shutdown_timeout
        self.poll_interval = poll_interval
        self.on_exit = on_exit
        self.restarts = 0
        self._stopping = threading.Event()
        self._signals = 0

    def _start(self, slot: _Slot) -> None:
        slot.process = self.spawn(slot.command)
        slot.started_at = self.clock()
        slot.restart_at = None
        logger.info("worker process %d started (pid %s)", slot.index + 1, slot.process.pid)

    def start(self) -> None:
        for slot in self.slots:
            self._start(slot)

    def poll_once(self) -> None:
        """Notice dead children and restart the ones whose backoff has passed."""
        now = self.clock()
        for slot in self.slots:
            if slot.restart_at is None:
                code = slot.process.poll()
                if code is None or self._stopping.is_set():
                    continue
                if now - slot.started_at >= self.stable_after:
                    slot.backoff.reset()
                delay = slot.backoff.next_delay()
                slot.restart_at = now + delay
                logger.error("worker process %d (pid %s) exited with code %s; restarting in "
                             "%.0f s", slot.index + 1, slot.process.pid, code, delay)
                self._forget(slot)
            if slot.restart_at is not None and now >= slot.restart_at:
                self.restarts += 1
                self._start(slot)

    def _forget(self, slot: _Slot) -> None:
        """Tell ``on_exit`` that ``slot``'s child died (never raises)."""
        if self.on_exit is None:
            return
        try:
            forgotten = self.on_exit(slot.process.pid)
        except Exception as exc:
            logger.warning("could not unregister dead worker process %d (pid %s): %s: %s",
                           slot.index + 1, slot.process.pid, type(exc).__name__, exc)
        else:
            if forgotten:
                logger.info("unregistered %s (worker process %d, pid %s)",
                            ", ".join(forgotten), slot.index + 1, slot.process.pid)

    def _live(self) -> list[_Slot]:
        return [s for s in self.slots if s.process is not None and s.process.poll() is None]

    def stop(self) -> int:
        """SIGTERM every child, wait for them (bounded), kill stragglers; 0 if all exited 0."""
        self._stopping.set()
        for slot in self._live():
            slot.process.send_signal(signal.SIGTERM)
        deadline = self.clock() + self.shutdown_timeout
        codes = []
        for slot in self.slots:
            if slot.process is None:
                continue
            try:
                codes.append(slot.process.wait(max(0.0, deadline - self.clock())))
            except subprocess.TimeoutExpired:
                logger.error("worker process %d (pid %s) did not stop in %.0f s; killing it",
                             slot.index + 1, slot.process.pid, self.shutdown_timeout)
                slot.process.kill()
                codes.append(slot.process.wait())
        return 0 if all(code == 0 for code in codes) else 1

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._signals += 1
        if self._signals > 1:
            logger.warning("second %s: forwarding it", signal.Signals(signum).name)
            for slot in self._live():
                slot.process.send_signal(signum)
        self._stopping.set()

    def run(self, install_signals: bool = True) -> int:
        """Start the children and keep them running until a signal; return the exit code."""
        with stop_signals(self._on_signal, install_signals):
            self.start()
            while not self._stopping.wait(self.poll_interval):
                self.poll_once()
            logger.info("stopping %d worker process(es)", len(self.slots))
            return self.stop()
