"""The delay server (``rundelay``): ``asgi.delay`` messages, sent later.

How this works: an ``asgi.delay`` message asks for ``content`` to be sent to
``channel`` after ``delay`` milliseconds. The delay server receives those
messages, checks them with ``asgi_spec.formats.validate_asgi_delay`` and
stores each one *in the layer* with ``layer.send_later`` (the layer's
``delay`` extension: a table of the SQLite file, a sorted set on the queue's
Redis server), then calls ``layer.deliver_due()``, which moves every due
message into its channel atomically. Nothing is held in the process, so a
restarted (or second) delay server picks up where the first stopped, and
several can run at once for availability: each move happens once.

``run_once()`` is the unit: one receive on ``asgi.delay`` that waits no
longer than the time until the next scheduled message is due (and at most
``poll_interval``), then one delivery pass. When the layer makes
``asgi.delay`` at-least-once, the request is acknowledged only once it is
stored, so a server killed in between loses nothing (it may store it twice).
``run()`` loops until SIGTERM/SIGINT, with a registry heartbeat (kind
``"delay"``) and a bounded backoff on layer errors.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from typing import Any

import click

from asgi_spec import DEFAULT_LAYER_URL, formats
from asgi_spec.acks import wants_receipts
from asgi_spec.exceptions import ChannelLayerError, MessageFormatError, MessageTooLarge
from asgi_spec.registry import HEARTBEAT_INTERVAL, HEARTBEAT_TTL, has_registry
from worker.backoff import Backoff
from worker.stop_signals import stop_signals
from worker.worker import default_name

logger = logging.getLogger("worker.delay")

#: The registry ``kind`` delay servers register under.
KIND_DELAY = "delay"

#: The layer extension the delay server needs.
DELAY_EXTENSION = "delay"

#: Due messages moved per ``deliver_due`` call; a full batch is followed by another.
BATCH = 1000

#: Seconds between two delivery passes while a due message cannot move (its
#: channel is full): retried often, without spinning.
OVERDUE_RETRY = 0.1


class DelayServer:
    """Stores ``asgi.delay`` requests in ``layer`` and delivers them when due."""

    def __init__(self, layer: Any, *, name: str | None = None, poll_interval: float = 1.0,
                 heartbeat_interval: float = HEARTBEAT_INTERVAL,
                 sleep: Any = None) -> None:
        if DELAY_EXTENSION not in getattr(layer, "extensions", ()):
            raise ValueError(f"layer {layer!r} has no 'delay' extension (send_later, "
                             "deliver_due): it cannot store delayed messages")
        if poll_interval <= 0:
            raise ValueError(f"poll_interval must be positive, got {poll_interval}")
        self.layer = layer
        self.name = name or default_name()
        self.poll_interval = poll_interval
        self.heartbeat_interval = heartbeat_interval
        self.scheduled = 0
        self.delivered = 0
        self._receipts = wants_receipts(layer, [formats.ASGI_DELAY])
        self._stopping = threading.Event()
        self._sleep = sleep or self._stopping.wait
        self._backoff = Backoff(initial=0.1, maximum=5.0)

    # -- the unit of work ---------------------------------------------------

    def wait_time(self) -> float:
        """Seconds to wait for a new request: until the next message is due, capped.

        A message already overdue after the last delivery pass could not move
        (its channel is full): it is retried every ``OVERDUE_RETRY`` s.
        """
        due = self.layer.next_due()
        if due is None:
            return self.poll_interval
        now = getattr(self.layer, "clock", time.time)()
        if due <= now:
            return min(OVERDUE_RETRY, self.poll_interval)
        return min(due - now, self.poll_interval)

    def run_once(self, block: bool = True) -> int:
        """Take at most one ``asgi.delay`` request, then deliver what is due.

        Returns how many scheduled messages were delivered. Never raises: layer
        errors are logged and followed by a growing pause.
        """
        try:
            wait = self.wait_time() if block else 0.0
            receipt = None
            if self._receipts:
                channel, content, receipt = self.layer.receive_with_receipt(
                    [formats.ASGI_DELAY], block=wait > 0, timeout=wait)
            else:
                channel, content = self.layer.receive(
                    [formats.ASGI_DELAY], block=wait > 0, timeout=wait)
            if channel is not None:
                self.schedule(content)
                if receipt is not None:
                    self.layer.ack(receipt)
            delivered = self.deliver()
        except Exception as exc:  # the layer: log, pause, go on
            delay = self._backoff.next_delay()
            logger.error("delay server %s: channel layer failed (%s: %s); retrying in %.1f s",
                         self.name, type(exc).__name__, exc, delay)
            self._sleep(delay)
            return 0
        self._backoff.reset()
        return delivered

    def schedule(self, content: Any) -> bool:
        """Store one ``asgi.delay`` request; ``False`` (logged) if it is invalid.

        Layer errors other than a bad request propagate (the request is then
        not acknowledged).
        """
        try:
            formats.validate_asgi_delay(content)
            self.layer.send_later(content["channel"], content["content"],
                                  content["delay"] / 1000)
        except (MessageFormatError, MessageTooLarge, ValueError, TypeError) as exc:
            logger.error("dropped an asgi.delay message: %s: %s", type(exc).__name__, exc)
            return False
        self.scheduled += 1
        return True

    def deliver(self) -> int:
        """Move every due message into its channel (in batches); return how many."""
        total = 0
        while True:
            moved = self.layer.deliver_due(BATCH)
            total += moved
            if moved < BATCH:
                break
        self.delivered += total
        return total

    # -- the process around it ----------------------------------------------

    def stop(self) -> None:
        self._stopping.set()

    def heartbeat(self) -> None:
        if not has_registry(self.layer):
            return
        info = {"pid": os.getpid(), "scheduled": self.scheduled, "delivered": self.delivered}
        try:
            self.layer.register_process(KIND_DELAY, self.name, info, HEARTBEAT_TTL)
        except ChannelLayerError as exc:
            logger.error("delay server %s heartbeat failed: %s", self.name, exc)

    def _on_signal(self, signum: int, frame: Any) -> None:
        logger.info("%s: delay server %s stops", signal.Signals(signum).name, self.name)
        self._stopping.set()

    def run(self, install_signals: bool = True) -> int:
        """Loop until stopped; return 0."""
        beat_at = 0.0
        try:
            with stop_signals(self._on_signal, install_signals):
                logger.info("delay server %s (pid %d) consumes %s", self.name, os.getpid(),
                            formats.ASGI_DELAY)
                while not self._stopping.is_set():
                    if time.monotonic() >= beat_at:
                        self.heartbeat()
                        beat_at = time.monotonic() + self.heartbeat_interval
                    self.run_once(block=True)
        finally:
            if has_registry(self.layer):
                try:
                    self.layer.unregister_process(KIND_DELAY, self.name)
                except ChannelLayerError as exc:
                    logger.error("delay server %s could not unregister: %s", self.name, exc)
        logger.info("delay server %s stopped: %d scheduled, %d delivered", self.name,
                    self.scheduled, self.delivered)
        return 0


@click.command(context_settings={"auto_envvar_prefix": "SWITCHBOARD_DELAY",
                                 "help_option_names": ["-h", "--help"]})
@click.option("--layer", default=DEFAULT_LAYER_URL, show_default=True,
              envvar=["SWITCHBOARD_DELAY_LAYER", "CHANNEL_LAYER_URL", "REDIS_URL"],
              show_envvar=True, metavar="URL|MODULE:ATTR",
              help="The channel layer: sqlite:///path.db, redis://host:6379/0, ... "
                   "or an importable layer object.")
@click.option("--poll-interval", type=click.FloatRange(min=0, min_open=True), default=1.0,
              show_default=True, show_envvar=True,
              help="Longest wait (s) between two looks at the scheduled messages.")
@click.option("--name", show_envvar=True,
              help="The delay server's name in the registry (default: host-pid-random).")
@click.option("-v", "--verbosity", type=click.IntRange(0, 3), default=1, show_default=True,
              show_envvar=True, help="0 warnings, 1 info, 2 debug.")
def rundelay(layer: str, poll_interval: float, name: str | None, verbosity: int) -> None:
    """Consume asgi.delay and send each message on when its delay has passed."""
    from worker.cli import configure_logging, open_layer

    configure_logging(verbosity)
    channel_layer = open_layer(layer)
    try:
        server = DelayServer(channel_layer, name=name, poll_interval=poll_interval)
    except ValueError as exc:
        channel_layer.close()
        raise click.UsageError(str(exc)) from None
    try:
        code = server.run()
    finally:
        channel_layer.close()
    raise SystemExit(code)


def main() -> None:
    """The ``rundelay`` console script (also ``python -m worker.delay``)."""
    rundelay()


if __name__ == "__main__":
    main()
