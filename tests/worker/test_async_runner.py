"""Tests for ``worker.async_runner``: the worker's one background event loop."""

from __future__ import annotations

import asyncio
import threading

import pytest

from tests.worker.helpers import memory_layer
from worker.async_runner import EventLoopThread
from worker.outbox import Outbox, current_outbox


def test_run_returns_the_result_from_a_background_loop_thread():
    """run() executes the coroutine on the loop's thread and returns its result."""
    runner = EventLoopThread()

    async def where():
        await asyncio.sleep(0)
        return threading.current_thread().name

    try:
        assert runner.run(where()) == "worker-asyncio"
        assert runner.running
    finally:
        runner.stop()
    assert not runner.running


def test_run_raises_the_coroutine_error():
    """An exception in the coroutine is raised from run() in the calling thread."""
    runner = EventLoopThread()

    async def fail():
        raise LookupError("x")

    try:
        with pytest.raises(LookupError):
            runner.run(fail())
    finally:
        runner.stop()


def test_outbox_is_current_inside_the_coroutine_only():
    """The given outbox is current inside the coroutine, not on the loop afterwards."""
    runner = EventLoopThread()
    outbox = Outbox(memory_layer())

    async def current():
        return current_outbox()

    try:
        assert runner.run(current(), outbox) is outbox
        assert runner.run(current()) is None
    finally:
        runner.stop()


def test_stop_without_start_is_harmless_and_loop_restarts():
    """stop() before any run is a no-op, and run() after stop() starts a fresh loop."""
    runner = EventLoopThread()
    runner.stop()

    async def one():
        return 1

    assert runner.run(one()) == 1
    runner.stop()
    assert runner.run(one()) == 1
    runner.stop()
