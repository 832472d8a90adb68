"""``Worker``: receive a message, route it, run its consumer, flush its sends. Repeat.

How this works: ``run_once()`` is the whole unit of work, a plain synchronous
function: one ``layer.receive`` over the routed channels, one ``Message``,
one route match, one consumer call inside an ``Outbox`` (whose held sends are
flushed when the consumer returns and dropped when it raises). It never
raises: consumer errors are logged with their traceback, a missing route is
logged, ``ConsumeLater`` requeues the message with a bounded retry count, and
layer errors are logged loudly and followed by a bounded exponential backoff.
When the layer makes some of the worker's channels at-least-once (its
``acks`` extension and ``at_least_once`` option), ``run_once`` receives with
``receive_with_receipt`` and acknowledges a message once its consumer
returned and its sends were flushed; a consumer that raised leaves it
unacknowledged, so the layer delivers it again after its ``ack_timeout``
(after ``max_retries`` failed deliveries it is acknowledged and given up).

``run()`` wraps it: N loop threads calling ``run_once(block=True)`` over the
one layer, the main thread renewing the worker's registry entry
``BEATS_PER_INTERVAL`` times per heartbeat interval (so a killed worker is
shown stale within one interval: see ``asgi_spec.registry``), and signal
handlers. The first SIGTERM/SIGINT lets each thread finish its
current message (within ``shutdown_timeout``), then the worker deregisters
and ``run()`` returns 0; a second signal exits the process at once.
``async def`` consumers run on the worker's one event loop
(``worker.async_runner``).
"""

from __future__ import annotations

import fnmatch
import inspect
import logging
import os
import re
import signal
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from typing import Any

from asgi_spec import formats, names
from asgi_spec.acks import wants_receipts
from asgi_spec.registry import (
    HEARTBEAT_INTERVAL,
    KIND_WORKER,
    beat_period,
    has_registry,
    registration_ttl,
)
from worker.async_runner import EventLoopThread
from worker.backoff import Backoff
from worker.exceptions import ConsumeLater, DenyConnection
from worker.message import RETRIES_KEY, Message
from worker.outbox import (
    Batch,
    Outbox,
    _active,
    _batch,
    before_immediate,
    send_with_retry,
)
from worker.routing import Router
from worker.stop_signals import stop_signals

logger = logging.getLogger("worker")

#: Seconds after a first SIGTERM/SIGINT in which another is the same request (a
#: terminal's Ctrl-C reaches the process group, then honcho or systemd sends SIGTERM).
SIGNAL_ECHO = 1.0

#: Seconds of consumer work one batch may hold back (see ``Worker.batch_limit``).
BATCH_BUDGET = 0.005

#: Channels where a consumer error in debug mode closes the socket with 1011.
_WEBSOCKET_OPEN = frozenset({formats.WEBSOCKET_CONNECT, formats.WEBSOCKET_RECEIVE})


def select_channels(channels: Iterable[str], only: Iterable[str] = (),
                    exclude: Iterable[str] = ()) -> list[str]:
    """``channels`` kept by the ``only`` globs (all when empty) minus the ``exclude`` globs."""
    only, exclude = list(only), list(exclude)
    return [
        channel for channel in sorted(channels)
        if (not only or any(fnmatch.fnmatchcase(channel, p) for p in only))
        and not any(fnmatch.fnmatchcase(channel, p) for p in exclude)
    ]


def default_name() -> str:
    """``<host>-<pid>-<random>``, made of characters the registry accepts."""
    host = re.sub(r"[^A-Za-z0-9\-_.]", "-", socket.gethostname())[:60] or "host"
    return f"{host}-{os.getpid()}-{names.random_suffix(6)}"


def _error_response(debug: bool) -> dict[str, Any]:
    """The 500 a client gets when the consumer of its request raised.

    In debug mode the body is the traceback; otherwise it says nothing more.
    (If the consumer had already started a streamed response, the server
    refuses this second start and cuts the connection instead.)
    """
    body = traceback.format_exc() if debug else "Internal Server Error\n"
    return {"status": 500, "headers": [[b"content-type", b"text/plain; charset=utf-8"]],
            "content": body.encode("utf-8", "replace")}


def _consumer_name(consumer: Any) -> str:
    module = getattr(consumer, "__module__", None)
    name = getattr(consumer, "__qualname__", None) or repr(consumer)
    return f"{module}.{name}" if module else name


class Worker:
    """Consumes the channels of ``router`` (a ``Router`` or any routing) from ``layer``."""

    def __init__(
        self,
        layer: Any,
        router: Any,
        *,
        only_channels: Iterable[str] = (),
        exclude_channels: Iterable[str] = (),
        name: str | None = None,
        threads: int = 1,
        debug: bool = False,
        max_retries: int = 10,
        retry_total: float = 2.0,
        heartbeat_interval: float = HEARTBEAT_INTERVAL,
        heartbeat_ttl: float | None = None,
        shutdown_timeout: float = 30.0,
        batch_size: int = 1,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Any] | None = None,
    ) -> None:
        self.layer = layer
        self.router = router if isinstance(router, Router) else Router(router)
        self.channels = select_channels(self.router.channels, only_channels, exclude_channels)
        if not self.channels:
            raise ValueError(
                f"no channels to consume: the routing covers {sorted(self.router.channels)}, "
                f"--only-channels {list(only_channels)} --exclude-channels "
                f"{list(exclude_channels)} leave none"
            )
        if threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        self.name = names.validate_group_name(name) if name is not None else default_name()
        self.threads = threads
        self.debug = debug
        self.max_retries = max_retries
        self.retry_total = retry_total
        if heartbeat_interval <= 0:
            raise ValueError(f"heartbeat_interval must be positive, got {heartbeat_interval}")
        #: The promise: stale within this long after the last beat (beats come
        #: ``BEATS_PER_INTERVAL`` times as often); the TTL defaults to three intervals.
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_ttl = (registration_ttl(heartbeat_interval) if heartbeat_ttl is None
                              else heartbeat_ttl)
        self.shutdown_timeout = shutdown_timeout
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.batch_size = batch_size
        self._typical: float | None = None  # moving average of a consumer's seconds
        self._first_signal_at = 0.0
        self.clock = clock
        self._stopping = threading.Event()
        # Backoff after layer errors stops early on shutdown; reply retries never do.
        self._backoff_sleep = sleep or self._stopping.wait
        self._retry_sleep = sleep or time.sleep
        self._backoff = Backoff(initial=0.1, maximum=5.0)
        self._layer_down = False
        self._async = EventLoopThread(f"worker-asyncio-{self.name}")
        self._lock = threading.Lock()
        self._current: dict[int, tuple[str, float]] = {}
        self._timings: dict[str, list[Any]] = {}  # channel -> [handled, seconds, failed]
        self.processed = 0
        self.failed = 0
        self.started_at = clock()
        self._warned_no_registry = False
        self._receipts = wants_receipts(layer, self.channels)

    # -- the unit of work ---------------------------------------------------

    def run_once(self, block: bool = True) -> bool:
        """Receive and handle what is waiting (up to ``batch_size`` messages, one round
        trip); ``False`` if nothing came (or the layer failed)."""
        receipt = None
        batch: list[tuple[str, dict[str, Any]]] = []
        try:
            if self._receipts:
                channel, content, receipt = self.layer.receive_with_receipt(
                    self.channels, block=block)
                batch = [] if channel is None else [(channel, content)]
            elif (limit := self.batch_limit()) > 1 and hasattr(self.layer, "receive_batch"):
                batch = self.layer.receive_batch(self.channels, limit, block=block)
            else:
                channel, content = self.layer.receive(self.channels, block=block)
                batch = [] if channel is None else [(channel, content)]
        except Exception as exc:
            self._layer_failed(exc)
            return False
        if self._layer_down:
            self._layer_down = False
            self._backoff.reset()
            logger.warning("channel layer is reachable again; worker %s resumes", self.name)
            self.heartbeat()  # a restarted Redis has lost the registry: be seen at once
        if not batch:
            return False
        if len(batch) == 1:
            done = self.handle(*batch[0])
            if receipt is not None:
                self._acknowledge(batch[0][0], receipt, done)
            return True
        held = Batch(sleep=self._retry_sleep, retry_total=self.retry_total)
        with held.activate():
            for channel, content in batch:
                self.handle(channel, content)
        held.flush()
        return True

    def batch_limit(self) -> int:
        """How many messages to take in one receive now.

        Batches (``batch_size`` > 1, off by default) save round trips, but one
        thread works through a batch alone: a slow consumer holds the rest of
        it back while other threads or workers idle. So the limit follows the
        typical consumer time: a batch should take about ``BATCH_BUDGET``
        seconds, never more than ``batch_size`` messages, and one at a time
        until a consumer was timed. A fast route followed by slow ones can
        still serialise a few; that is why batching is opt-in.
        """
        typical = self._typical
        if self.batch_size == 1 or typical is None:
            return 1
        return max(1, min(self.batch_size, int(BATCH_BUDGET / max(typical, 1e-6))))

    def handle(self, channel: str, content: dict[str, Any]) -> bool:
        """Route and run one received message. Never raises.

        Returns ``False`` only when the consumer raised (so the message is
        worth delivering again); a message no route matches counts as done.
        """
        began = self._started(channel)
        done = True
        try:
            message = Message(content, channel, self.layer)
            found = self.router.match(message)
        except Exception:
            logger.exception("cannot route a message on %r", channel)
            self._finished(channel, began, done)
            return True
        try:
            if found is None:
                logger.warning("no route matched a message on %r (path=%r)",
                               channel, message.get("path"))
                return True
            done = self._consume(message, *found)
            return done
        finally:
            self._finished(channel, began, done)

    def _acknowledge(self, channel: str, receipt: Any, done: bool) -> None:
        """Ack an at-least-once message, or leave it to be delivered again. Never raises."""
        deliveries = getattr(receipt, "deliveries", 1)
        if not done and deliveries <= self.max_retries:
            logger.warning("a message on %r was not acknowledged (its consumer raised on "
                           "delivery %d): the layer delivers it again after its ack timeout",
                           channel, deliveries)
            return
        if not done:
            logger.error("gave up on a message on %r: its consumer raised on %d deliveries "
                         "(max_retries %d)", channel, deliveries, self.max_retries)
        try:
            acked = self.layer.ack(receipt)
        except Exception as exc:
            logger.error("could not acknowledge a message on %r (%s: %s): it may be "
                         "delivered again", channel, type(exc).__name__, exc)
            return
        if not acked:
            logger.warning("a message on %r was acknowledged too late (after the layer's ack "
                           "timeout, or it expired): it may be delivered again", channel)

    def _consume(self, message: Message, consumer: Any, kwargs: dict[str, Any]) -> bool:
        outbox = Outbox(self.layer, sleep=self._retry_sleep, retry_total=self.retry_total)
        channel = message.channel.name
        try:
            token = _active.set(outbox)  # ``outbox.activate()``, without a generator's cost
            try:
                result = consumer(message, **kwargs)
            finally:
                _active.reset(token)
            if result is not None and inspect.isawaitable(result):
                self._async.run(result, outbox)
        except ConsumeLater:
            outbox.discard()
            self._requeue(message)
        except DenyConnection:
            outbox.discard()
            self._deny(message, consumer)
        except Exception:
            outbox.discard()
            before_immediate()  # the earlier messages' replies go before this one's 500
            logger.exception("consumer %s raised on a message on %r (path=%r)",
                             _consumer_name(consumer), channel, message.get("path"))
            if self.debug and channel in _WEBSOCKET_OPEN:
                self._reply(message, {"close": 1011})
            elif channel == formats.HTTP_REQUEST:
                self._reply(message, _error_response(self.debug))
            return False
        else:
            batch = _batch.get()
            if batch is None:
                outbox.flush()
            else:
                batch.take(outbox)
        return True

    def _requeue(self, message: Message) -> None:
        channel = message.channel.name
        retries = message.retries + 1
        if retries > self.max_retries:
            logger.error("gave up on a message on %r: ConsumeLater %d times (the limit)",
                         channel, self.max_retries)
            return
        content = dict(message.content)
        content[RETRIES_KEY] = retries
        send_with_retry(self.layer, channel, content, sleep=self._retry_sleep,
                        retry_total=self.retry_total)

    def _deny(self, message: Message, consumer: Any) -> None:
        if message.channel.name == formats.WEBSOCKET_CONNECT:
            self._reply(message, {"close": True})
        else:
            logger.error("consumer %s raised DenyConnection on %r; only websocket.connect "
                         "consumers may deny", _consumer_name(consumer), message.channel.name)

    def _reply(self, message: Message, content: dict[str, Any]) -> None:
        reply_channel = message.content.get("reply_channel")
        if isinstance(reply_channel, str):
            send_with_retry(self.layer, reply_channel, content, sleep=self._retry_sleep,
                            retry_total=self.retry_total)

    def _layer_failed(self, exc: Exception) -> None:
        self._layer_down = True
        delay = self._backoff.next_delay()
        kind = "unavailable" if isinstance(exc, ConnectionError) else "failed"
        logger.error("channel layer %s (%s: %s); worker %s retries in %.1f s (attempt %d)",
                     kind, type(exc).__name__, exc, self.name, delay, self._backoff.failures)
        self._backoff_sleep(delay)

    # -- status and registry ------------------------------------------------

    def _started(self, channel: str) -> float:
        with self._lock:
            self._current[threading.get_ident()] = (channel, self.clock())
        return time.perf_counter()

    def _finished(self, channel: str, began: float, done: bool) -> None:
        seconds = time.perf_counter() - began
        with self._lock:
            self._current.pop(threading.get_ident(), None)
            self.processed += 1
            timing = self._timings.setdefault(channel, [0, 0.0, 0])
            timing[0] += 1
            timing[1] += seconds
            self._typical = seconds if self._typical is None else (
                0.8 * self._typical + 0.2 * seconds)
            if not done:
                self.failed += 1
                timing[2] += 1

    def info(self) -> dict[str, Any]:
        """What the registry says about this worker (see ``asgi_spec.registry``)."""
        with self._lock:
            running = sorted(self._current.values(), key=lambda item: item[1])
            processed, failed = self.processed, self.failed
            by_channel = {channel: list(timing) for channel, timing in self._timings.items()}
        return {
            "channels": list(self.channels),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "threads": self.threads,
            "started_at": self.started_at,
            "processed": processed,
            "busy": len(running),
            "current": running[0][0] if running else None,
            "current_since": running[0][1] if running else None,
            "failed": failed,
            "by_channel": by_channel,
            "heartbeat_at": getattr(self.layer, "clock", self.clock)(),
            "heartbeat_interval": self.heartbeat_interval,
        }

    def heartbeat(self) -> bool:
        """Register (or renew) this worker in the layer; ``False`` if that failed."""
        if not has_registry(self.layer):
            if not self._warned_no_registry:
                self._warned_no_registry = True
                logger.warning("layer %r has no registry extension: servers cannot see "
                               "this worker", self.layer)
            return False
        try:
            self.layer.register_process(KIND_WORKER, self.name, self.info(), self.heartbeat_ttl)
        except Exception as exc:
            logger.error("worker %s heartbeat failed: %s: %s", self.name,
                         type(exc).__name__, exc)
            return False
        return True

    def unregister(self) -> None:
        """Remove this worker from the registry (clean shutdown). Never raises."""
        if not has_registry(self.layer):
            return
        try:
            self.layer.unregister_process(KIND_WORKER, self.name)
        except Exception as exc:
            logger.error("worker %s could not unregister: %s: %s", self.name,
                         type(exc).__name__, exc)

    # -- the process around it ----------------------------------------------

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def stop(self) -> None:
        """Ask ``run()`` to finish the current messages and return."""
        self._stopping.set()

    def _loop(self) -> None:
        while not self._stopping.is_set():
            began = time.monotonic()
            try:
                got = self.run_once(block=True)
            except Exception:  # run_once does not raise; this is a last guard
                logger.exception("unexpected error in the worker loop")
                got = False
            if not got and time.monotonic() - began < 0.005:
                self._stopping.wait(0.05)  # a layer that ignores block=True: do not spin

    def _on_signal(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self._stopping.is_set():
            if time.monotonic() - self._first_signal_at < SIGNAL_ECHO:
                logger.info("%s: worker %s is already stopping", name, self.name)
                return  # Ctrl-C reached the process group, then the manager's SIGTERM
            logger.warning("second %s: worker %s exits now", name, self.name)
            os._exit(128 + signum)
        self._first_signal_at = time.monotonic()
        logger.info("%s: worker %s finishes its current messages, then exits", name, self.name)
        self._stopping.set()

    def run(self, install_signals: bool = True) -> int:
        """Run until stopped; return 0 after a clean stop, 1 if consumers overran."""
        with stop_signals(self._on_signal, install_signals):
            logger.info("worker %s (pid %d, %d thread(s)) consumes %s", self.name, os.getpid(),
                        self.threads, ", ".join(self.channels))
            beat = self.heartbeat()
            loops = [threading.Thread(target=self._loop, name=f"{self.name}-{n}", daemon=True)
                     for n in range(self.threads)]
            for thread in loops:
                thread.start()
            # Beat on a fixed schedule (a slow registry write does not stretch the period);
            # after a failed heartbeat, try again soon: servers answer 503 while unseen.
            period = beat_period(self.heartbeat_interval)
            due = time.monotonic() + (period if beat else min(period, 0.5))
            while not self._stopping.wait(max(due - time.monotonic(), 0.0)):
                beat = self.heartbeat()
                due = max(due + period, time.monotonic()) if beat else \
                    time.monotonic() + min(period, 0.5)
            deadline = time.monotonic() + self.shutdown_timeout
            for thread in loops:
                thread.join(max(0.0, deadline - time.monotonic()))
            overran = sum(thread.is_alive() for thread in loops)
            self.unregister()
            self._async.stop()
        if overran:
            logger.error("worker %s: %d consumer(s) still running after %.0f s; exiting anyway",
                         self.name, overran, self.shutdown_timeout)
            return 1
        logger.info("worker %s stopped after %d messages", self.name, self.processed)
        return 0
