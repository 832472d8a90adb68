"""``switchboard status`` and ``manage.py channels_status`` against real processes sharing
an SQLite layer: what they show, and a killed worker showing up within one heartbeat
interval."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from asgi_spec.layers.sqlite import SQLiteChannelLayer
from asgi_spec.ops import diagnose, snapshot
from tests.ops.processes import REPO, Processes, clean_env, get, status_json, wait_until


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    started = Processes(tmp_path)
    yield started
    started.stop_all()


@pytest.mark.slow
def test_status_of_a_running_deployment_and_a_killed_worker(tmp_path, processes):
    """Real server and worker processes: status shows both with the worker's pid and counts,
    exits 0; after SIGKILL the worker is flagged stale within one heartbeat interval
    (0.5 s), then gone, and status exits 1 saying no worker is live."""
    url = f"sqlite:///{tmp_path}/layer.db"
    layer = SQLiteChannelLayer(tmp_path / "layer.db")
    try:
        worker = processes.worker(url, "w1", heartbeat=0.5, ttl=3.0)
        _, port = processes.server(url)
        wait_until(lambda: "w1" in layer.live_processes("worker"), "the worker's heartbeat")
        for _ in range(5):
            assert get(f"http://127.0.0.1:{port}/")[0] == 200
        time.sleep(0.6)  # one more worker heartbeat, carrying the processed count
        code, data = status_json(url)
        assert code == 0, data["problems"]
        (seen,) = data["workers"]
        assert (seen["name"], seen["pid"], seen["processed"]) == ("w1", worker.pid, 5)
        assert data["servers"][0]["listening"] == [f"tcp:127.0.0.1:{port}"]
        http = next(c for c in data["channels"] if c["name"] == "http.request")
        assert http["sent"] == 5 and http["consumers"] == ["w1"]

        worker.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        stale = wait_until(lambda: [p for p in diagnose(snapshot(layer), layer.clock())
                                    if p.code == "stale-heartbeat"], "a stale heartbeat",
                           timeout=5, interval=0.05)
        assert time.monotonic() - killed <= 0.5
        assert stale[0].subject == "w1"
        wait_until(lambda: not layer.live_processes("worker"), "the worker to expire", 6)
        code, data = status_json(url)
        assert code == 1
        assert data["problems"][0]["code"] == "no-workers"
    finally:
        layer.close()


@pytest.mark.slow
def test_manage_py_channels_status_uses_the_settings_layer(tmp_path):
    """``manage.py channels_status`` reads the layer the settings name (here through
    CHANNEL_LAYER_URL), takes every status option, and exits with the health status."""
    layer = SQLiteChannelLayer(tmp_path / "layer.db")
    layer.register_process("worker", "w9", {"channels": ["http.request"]}, ttl=60)
    layer.close()
    env = clean_env(DJANGO_SETTINGS_MODULE="tests.django.project.settings",
                    CHANNEL_LAYER_URL=f"sqlite:///{tmp_path}/layer.db")
    done = subprocess.run([sys.executable, "-m", "django", "channels_status", "--json",
                           "--layer", "default"], cwd=REPO, env=env, capture_output=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr.decode()
    import json

    assert json.loads(done.stdout)["workers"][0]["name"] == "w9"
    missing = subprocess.run([sys.executable, "-m", "django", "channels_status", "--layer",
                              f"sqlite:///{tmp_path}/missing.db"], cwd=REPO, env=env,
                             capture_output=True, timeout=60)
    assert missing.returncode == 3 and b"no SQLite layer" in missing.stderr


def test_watch_stops_on_ctrl_c_with_the_last_status(tmp_path):
    """``switchboard status --watch`` refreshes until SIGINT, then exits quietly with the
    status of its last look (1 here: no worker), without a traceback."""
    layer = SQLiteChannelLayer(tmp_path / "layer.db")
    layer.register_process("interfaceserver", "srv", {"reply_prefix": "srv!"}, ttl=60)
    layer.close()
    watch = subprocess.Popen([str(Path(sys.executable).with_name("switchboard")), "status",
                              "--watch", "--interval", "0.2", "--layer",
                              f"sqlite:///{tmp_path}/layer.db"], cwd=REPO, env=clean_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(1.0)
    watch.send_signal(signal.SIGINT)
    out, err = watch.communicate(timeout=10)
    assert watch.returncode == 1
    assert out.count(b"no live worker is registered") >= 2
    assert b"Traceback" not in err
