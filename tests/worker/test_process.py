"""Real processes: ``runworker`` over the SQLite layer, driven through the layer.

These start the console script as a subprocess, so they wait on real time
(process start-up, blocking receives); every wait has a deadline.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from asgi_spec.layers.sqlite import SQLiteChannelLayer
from asgi_spec.registry import KIND_WORKER, live_consumers
from tests.worker.helpers import http_request

REPO = Path(__file__).resolve().parents[2]
RUNWORKER = Path(sys.executable).with_name("runworker")
DEADLINE = 20.0

pytestmark = pytest.mark.slow


@pytest.fixture
def layer(tmp_path):
    layer = SQLiteChannelLayer(tmp_path / "layer.db")
    yield layer
    layer.close()


def start(layer, *args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_WORKER_")}
    env.pop("CHANNEL_LAYER_URL", None)
    return subprocess.Popen(
        [str(RUNWORKER), "tests.bench.app:channel_routing", "--layer",
         f"sqlite:///{layer.path}", *args],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )


def ask_hello(layer, reply_channel):
    layer.send("http.request", http_request("/", reply_channel=reply_channel))
    name, reply = layer.receive([reply_channel.split("!")[0] + "!"], block=True,
                                timeout=DEADLINE)
    assert name == reply_channel, "no reply from the worker in time"
    return reply


def wait_for(predicate, what):
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def stop(process, signum=signal.SIGTERM):
    """Signal ``process``; return its exit code and its stderr (kill it past the deadline)."""
    process.send_signal(signum)
    try:
        _, stderr = process.communicate(timeout=DEADLINE)
    except subprocess.TimeoutExpired:
        process.kill()
        _, stderr = process.communicate()
    return process.returncode, stderr.decode()


def test_runworker_answers_registers_and_exits_0_on_sigterm(layer):
    """A runworker process answers an http.request, is registered, and on SIGTERM exits 0
    after unregistering."""
    process = start(layer, "--name", "proc-test")
    try:
        reply = ask_hello(layer, "test!one")
        assert (reply["status"], reply["content"]) == (200, b"hello")
        workers = live_consumers(layer, "http.request")
        assert list(workers) == ["proc-test"]
        assert workers["proc-test"]["pid"] == process.pid
    finally:
        code, stderr = stop(process)
    assert code == 0, stderr
    assert "SIGTERM" in stderr
    assert layer.live_processes(KIND_WORKER) == {}


def test_processes_supervisor_restarts_a_killed_child_and_stops_cleanly(layer):
    """--processes 2 runs two registered workers, restarts one killed with SIGKILL, and on
    SIGTERM stops both, exiting 0 with none left registered."""
    process = start(layer, "--processes", "2", "--name", "sup")
    try:
        wait_for(lambda: set(layer.live_processes(KIND_WORKER)) == {"sup-1", "sup-2"},
                 "two registered workers")
        old_pid = layer.live_processes(KIND_WORKER)["sup-1"]["pid"]
        os.kill(old_pid, signal.SIGKILL)
        wait_for(lambda: layer.live_processes(KIND_WORKER).get("sup-1", {}).get("pid")
                 not in (None, old_pid), "the killed worker to be restarted")
        assert ask_hello(layer, "test!two")["status"] == 200
    finally:
        code, stderr = stop(process)
    assert code == 0, stderr
    assert "exited with code -9; restarting" in stderr
    assert layer.live_processes(KIND_WORKER) == {}


def test_reload_restarts_the_worker_when_code_changes(layer, tmp_path):
    """``--reload`` runs the worker as a child and replaces it when a .py file under the
    working directory changes: the new code answers; SIGTERM stops both processes."""
    (tmp_path / "reloadapp.py").write_text(_RELOAD_APP.format(body="first"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_WORKER_")}
    env.pop("CHANNEL_LAYER_URL", None)
    watcher = subprocess.Popen(
        [str(RUNWORKER), "reloadapp:channel_routing", "--layer", f"sqlite:///{layer.path}",
         "--reload"], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: live_consumers(layer, "http.request"), "the first worker")
        assert ask_hello(layer, "srv!a")["content"] == b"first"
        first_workers = set(live_consumers(layer, "http.request"))
        (tmp_path / "reloadapp.py").write_text(_RELOAD_APP.format(body="second"))
        wait_for(lambda: set(live_consumers(layer, "http.request")) - first_workers,
                 "a restarted worker")
        assert ask_hello(layer, "srv!b")["content"] == b"second"
    finally:
        watcher.send_signal(signal.SIGTERM)
        _, err = watcher.communicate(timeout=DEADLINE)
    assert watcher.returncode == 0, err.decode(errors="replace")[-2000:]
    wait_for(lambda: not live_consumers(layer, "http.request"), "the child to unregister")


_RELOAD_APP = '''
from worker.routing import route


def hello(message):
    message.reply_channel.send({{"status": 200, "content": b"{body}"}})


channel_routing = [route("http.request", hello)]
'''
