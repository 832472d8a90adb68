"""The delay server: ``asgi.delay`` requests stored in the layer, delivered when due
(FakeClock), surviving a restart; and the ``rundelay`` command."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from asgi_spec.exceptions import LayerUnavailable
from asgi_spec.layers.memory import MemoryChannelLayer
from asgi_spec.layers.sqlite import SQLiteChannelLayer
from asgi_spec.testing import FakeClock
from tests.worker.helpers import SleepRecorder, drain
from worker import delay as delay_module
from worker.delay import KIND_DELAY, DelayServer

REPO = Path(__file__).resolve().parents[2]


def request(channel: str = "out", delay_ms: int = 5000, **content: Any) -> dict:
    return {"channel": channel, "delay": delay_ms, "content": content or {"x": 1}}


def make_server(layer: Any, **options: Any) -> DelayServer:
    options.setdefault("sleep", SleepRecorder())
    return DelayServer(layer, **options)


def test_delayed_message_arrives_after_its_delay():
    """A request is stored at once and its content sent to its channel when due."""
    layer = MemoryChannelLayer(clock=FakeClock())
    server = make_server(layer)
    layer.send("asgi.delay", request("out", 5000, n=1))
    assert server.run_once(block=False) == 0
    assert drain(layer, "out") == []
    layer.clock.advance(4.9)
    assert server.run_once(block=False) == 0
    layer.clock.advance(0.1)
    assert server.run_once(block=False) == 1
    assert drain(layer, "out") == [{"n": 1}]
    assert (server.scheduled, server.delivered) == (1, 1)


def test_zero_delay_is_delivered_by_the_same_step():
    """A request with delay 0 is delivered in the step that stores it."""
    layer = MemoryChannelLayer(clock=FakeClock())
    server = make_server(layer)
    layer.send("asgi.delay", request("srv!conn", 0))
    assert server.run_once(block=False) == 1
    assert layer.receive(["srv!"]) == ("srv!conn", {"x": 1})


def test_invalid_requests_are_logged_and_dropped(caplog):
    """A request that breaks the asgi.delay format names the field and is dropped."""
    layer = MemoryChannelLayer(clock=FakeClock())
    server = make_server(layer)
    layer.send("asgi.delay", {"channel": "out", "delay": -1, "content": {}})
    layer.send("asgi.delay", {"channel": "bad name", "delay": 1, "content": {}})
    layer.send("asgi.delay", request("out", 0))
    with caplog.at_level(logging.ERROR, logger="worker.delay"):
        for _ in range(3):
            server.run_once(block=False)
    assert "'delay'" in caplog.text and "'channel'" in caplog.text
    assert drain(layer, "out") == [{"x": 1}]
    assert server.scheduled == 1


def test_wait_time_follows_the_next_due_message():
    """The server waits for requests only until the next message is due."""
    layer = MemoryChannelLayer(clock=FakeClock())
    server = make_server(layer, poll_interval=2.0)
    assert server.wait_time() == 2.0
    layer.send_later("out", {}, 0.5)
    assert server.wait_time() == pytest.approx(0.5)
    layer.clock.advance(1)  # overdue: its channel was full at the last pass
    assert server.wait_time() == delay_module.OVERDUE_RETRY


def test_scheduled_messages_survive_a_restart(tmp_path):
    """Requests stored by one server are delivered by the next one (SQLite file)."""
    clock = FakeClock()
    first_layer = SQLiteChannelLayer(tmp_path / "l.db", clock=clock)
    first_layer.send("asgi.delay", request("out", 3000))
    assert make_server(first_layer).run_once(block=False) == 0
    first_layer.close()
    clock.advance(3)
    second_layer = SQLiteChannelLayer(tmp_path / "l.db", clock=clock)
    try:
        assert make_server(second_layer).run_once(block=False) == 1
        assert drain(second_layer, "out") == [{"x": 1}]
    finally:
        second_layer.close()


def test_at_least_once_request_is_acknowledged_only_once_stored(caplog):
    """With ``asgi.delay`` at-least-once, a request whose storing failed comes back after
    the ack timeout; one that was stored is acknowledged."""
    layer = MemoryChannelLayer(clock=FakeClock(), at_least_once=["asgi.delay"], ack_timeout=10)
    sleep = SleepRecorder()
    server = make_server(layer, sleep=sleep)
    real_send_later = layer.send_later
    failures = [LayerUnavailable("down")]

    def send_later(*args: Any) -> None:
        if failures:
            raise failures.pop()
        real_send_later(*args)

    layer.send_later = send_later  # type: ignore[method-assign]
    layer.send("asgi.delay", request("out", 0))
    with caplog.at_level(logging.ERROR, logger="worker.delay"):
        assert server.run_once(block=False) == 0
    assert "channel layer failed" in caplog.text and sleep.delays
    layer.clock.advance(10)
    assert server.run_once(block=False) == 1
    layer.clock.advance(10)
    assert server.run_once(block=False) == 0
    assert drain(layer, "out") == [{"x": 1}]


def test_needs_a_layer_with_the_delay_extension():
    """A layer without ``send_later``/``deliver_due`` is refused with the reason."""

    class Plain:
        extensions = ["groups"]

    with pytest.raises(ValueError, match="delay"):
        DelayServer(Plain())


def test_run_registers_and_stops():
    """``run`` heartbeats in the registry while it runs and deregisters when stopped."""
    layer = MemoryChannelLayer()
    server = DelayServer(layer, name="d1", poll_interval=0.05)
    seen = []

    def run_once(block: bool = True) -> int:
        seen.append(sorted(layer.live_processes(KIND_DELAY)))
        server.stop()
        return 0

    server.run_once = run_once  # type: ignore[method-assign]
    assert server.run(install_signals=False) == 0
    assert seen == [["d1"]]
    assert layer.live_processes(KIND_DELAY) == {}


def test_rundelay_refuses_the_memory_layer():
    """``rundelay --layer memory://`` explains why it cannot work."""
    result = CliRunner().invoke(delay_module.rundelay, ["--layer", "memory://"], env={})
    assert result.exit_code != 0
    assert "memory://" in result.output


@pytest.mark.slow
def test_rundelay_process_delivers_and_exits_on_sigterm(tmp_path):
    """The real command (``python -m worker.delay``) delivers a delayed message over the
    SQLite layer, and exits 0 on SIGTERM."""
    layer = SQLiteChannelLayer(tmp_path / "l.db")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("SWITCHBOARD_DELAY_") and k not in ("CHANNEL_LAYER_URL",
                                                                   "REDIS_URL")}
    process = subprocess.Popen(
        [sys.executable, "-m", "worker.delay", "--layer", f"sqlite:///{layer.path}",
         "--poll-interval", "0.2"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        layer.send("asgi.delay", request("out", 300, n=1))
        sent = time.monotonic()
        channel, message = layer.receive(["out"], block=True, timeout=20)
        assert (channel, message) == ("out", {"n": 1})
        assert time.monotonic() - sent >= 0.25
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)
        layer.close()
