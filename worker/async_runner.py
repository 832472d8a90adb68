"""One asyncio event loop per worker, for ``async def`` consumers.

How this works: the loop is created on first use and runs forever in a daemon
thread. A worker thread that meets a coroutine submits it with
``run_coroutine_threadsafe`` and blocks until it finishes, exactly as it
would for a sync consumer; several worker threads may therefore have
coroutines in flight on the one loop at the same time. The coroutine runs with
the worker thread's outbox made current inside its task, so its sends are held
and flushed like a sync consumer's. ``stop()`` ends the loop and its thread.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable
from typing import Any

from worker.outbox import Outbox


async def _with_outbox(outbox: Outbox | None, awaitable: Awaitable[Any]) -> Any:
    if outbox is None:
        return await awaitable
    with outbox.activate():
        return await awaitable


class EventLoopThread:
    """Runs awaitables on a private event loop in a background thread."""

    def __init__(self, name: str = "worker-asyncio") -> None:
        self.name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _start(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                ready = threading.Event()
                self._thread = threading.Thread(
                    target=self._serve, args=(loop, ready), name=self.name, daemon=True)
                self._thread.start()
                ready.wait()
                self._loop = loop
            return self._loop

    @staticmethod
    def _serve(loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        try:
            loop.run_forever()
        finally:
            for task in asyncio.all_tasks(loop):
                task.cancel()
            loop.run_until_complete(asyncio.sleep(0))
            loop.close()

    def run(self, awaitable: Awaitable[Any], outbox: Outbox | None = None) -> Any:
        """Run ``awaitable`` on the loop; block this thread until it returns or raises."""
        loop = self._start()
        future = asyncio.run_coroutine_threadsafe(_with_outbox(outbox, awaitable), loop)
        return future.result()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the loop (if it was ever started) and wait for its thread."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout)
