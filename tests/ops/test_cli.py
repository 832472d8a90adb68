"""``switchboard status``: output, exit status, --json, --watch, --members, layer choice,
against the memory layer (an importable object), a private Redis and SQLite."""

from __future__ import annotations

import itertools
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner

from asgi_spec.layers.memory import MemoryChannelLayer
from asgi_spec.layers.redis import RedisChannelLayer
from asgi_spec.layers.sqlite import SQLiteChannelLayer
from asgi_spec.ops.cli import cli
from worker.routing import route
from worker.worker import Worker

#: The layer ``--layer tests.ops.test_cli:LAYER`` names: shared with the command in-process.
LAYER = MemoryChannelLayer()
MODULE_LAYER = "tests.ops.test_cli:LAYER"
_prefixes = itertools.count()


def hello(message: Any) -> None:
    message.reply_channel.send({"status": 200, "content": b"hi"})


@pytest.fixture(autouse=True)
def clean_layer(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("SWITCHBOARD_LAYER", "CHANNEL_LAYER_URL", "REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    LAYER.flush()
    yield
    LAYER.flush()


def run(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(cli, ["status", *args], env=env, catch_exceptions=False)


def real_worker(layer: Any, name: str = "w1", channels: tuple[str, ...] = ("http.request",),
                **options: Any) -> Worker:
    """A real Worker, registered with its first heartbeat."""
    worker = Worker(layer, [route(c, hello) for c in channels], name=name, **options)
    assert worker.heartbeat()
    return worker


def register_server(layer: Any, name: str = "srv") -> None:
    layer.register_process("interfaceserver", name, {
        "reply_prefix": f"{name}!", "http_connections": 2, "websockets": 1,
        "http_requests_in_flight": 0, "heartbeat_at": layer.clock(),
        "heartbeat_interval": 5.0}, ttl=30)


def test_healthy_deployment_exits_0_with_the_report():
    """A worker consuming http.request and a server: tables of both, HEALTHY, status 0."""
    real_worker(LAYER)
    register_server(LAYER)
    result = run("--layer", MODULE_LAYER)
    assert result.exit_code == 0, result.output
    assert "WORKERS (1 live: 0 busy, 1 idle)" in result.output
    assert "INTERFACE SERVERS (1 live)" in result.output
    assert "http.request" in result.output
    assert result.output.rstrip().endswith("HEALTHY (0 errors, 0 warnings)")


def test_no_worker_exits_1_and_says_so():
    """With a server but no worker the command exits 1 and names the problem plainly."""
    register_server(LAYER)
    result = run("--layer", MODULE_LAYER)
    assert result.exit_code == 1
    assert "no live worker is registered" in result.output
    assert "UNHEALTHY (1 error, 0 warnings)" in result.output


def test_json_and_members():
    """--json prints one JSON document; --members lists each group's channels."""
    real_worker(LAYER)
    LAYER.group_add("room", "srv!a")
    LAYER.send("http.request", {"x": 1})
    result = run("--layer", MODULE_LAYER, "--json", "--members")
    assert result.exit_code == 0
    data = json.loads(result.output)
    assert data["healthy"] is True
    assert data["groups"] == [{"name": "room", "size": 1, "members": ["srv!a"]}]
    assert data["workers"][0]["name"] == "w1" and data["workers"][0]["pid"] == os.getpid()
    (http,) = [c for c in data["channels"] if c["name"] == "http.request"]
    assert http["pending"] == 1 and http["consumers"] == ["w1"]


def test_asked_channels_are_shown():
    """--channel adds a channel nobody consumes; waiting messages on it are an error."""
    real_worker(LAYER)
    LAYER.send("reports", {"x": 1})
    result = run("--layer", MODULE_LAYER, "--json", "-c", "reports")
    assert result.exit_code == 1
    data = json.loads(result.output)
    assert data["problems"][0]["message"] == ("1 message waiting on reports and no live "
                                              "worker consumes it")


def test_watch_refreshes_and_measures_rates():
    """--watch --count 3 prints three looks; the later ones carry a per-second rate."""
    real_worker(LAYER)
    sender = threading.Thread(target=lambda: [LAYER.send("http.request", {"n": n})
                                              or time.sleep(0.01) for n in range(20)])
    sender.start()
    result = run("--layer", MODULE_LAYER, "--json", "--watch", "--count", "3",
                 "--interval", "0.1")
    sender.join()
    looks = [json.loads(line) for line in result.output.splitlines()]
    assert len(looks) == 3
    rates = [next(c for c in look["channels"] if c["name"] == "http.request")["per_second"]
             for look in looks]
    assert rates[0] is None and rates[1] is not None and rates[1] > 0


def test_watch_text_refresh_says_how_to_stop():
    """The text form of --watch tells the interval and how to stop."""
    real_worker(LAYER)
    result = run("--layer", MODULE_LAYER, "--watch", "--count", "2", "--interval", "0.1")
    assert result.output.count("refreshing every 0.1 s; Ctrl-C to stop") == 2


def test_strict_makes_warnings_unhealthy():
    """A warning alone exits 0, and 1 with --strict."""
    real_worker(LAYER)
    for n in range(80):
        LAYER.send("http.request", {"n": n})  # 80 % of the default capacity of 100
    assert run("--layer", MODULE_LAYER).exit_code == 0
    result = run("--layer", MODULE_LAYER, "--strict")
    assert result.exit_code == 1
    assert "channel http.request 80% full" in result.output


def test_layer_from_the_environment(tmp_path):
    """Without --layer, CHANNEL_LAYER_URL names the layer (as for every command)."""
    layer = SQLiteChannelLayer(tmp_path / "layer.db")
    real_worker(layer)
    result = run("--json", env={"CHANNEL_LAYER_URL": f"sqlite:///{tmp_path}/layer.db"})
    layer.close()
    assert result.exit_code == 0
    assert json.loads(result.output)["workers"][0]["name"] == "w1"


def test_missing_sqlite_file_exits_3_and_creates_nothing(tmp_path):
    """A SQLite layer that does not exist is an error (3), not a new empty file."""
    result = run("--layer", f"sqlite:///{tmp_path}/none/layer.db")
    assert result.exit_code == 3
    assert "no SQLite layer at" in result.output
    assert not (tmp_path / "none").exists()


def test_unreachable_redis_exits_3_without_the_password():
    """A Redis nobody listens on: exit status 3, the reason, and no password shown."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.monotonic()
    result = run("--layer", f"redis://:hunter2@127.0.0.1:{port}/0")
    assert result.exit_code == 3
    assert "cannot reach the channel layer" in result.output
    assert "hunter2" not in result.output
    assert time.monotonic() - started < 10


def test_bad_input_is_a_usage_error():
    """An invalid --channel or an unknown layer scheme exits 2 with the reason."""
    bad_channel = run("--layer", MODULE_LAYER, "-c", "no spaces")
    assert bad_channel.exit_code == 2 and "--channel" in bad_channel.output
    bad_layer = run("--layer", "nosuch://x")
    assert bad_layer.exit_code == 2 and "unknown layer scheme" in bad_layer.output


def test_against_redis_with_running_workers(redis_url):
    """Two real workers running their loops on a private Redis: both shown, one busy while
    its consumer runs, the processed count after it; status 0."""
    url = f"{redis_url}?prefix=sbtest:cli{next(_prefixes)}:"
    layer = RedisChannelLayer.from_url(url)
    started, release = threading.Event(), threading.Event()

    def slow(message: Any) -> None:
        started.set()
        release.wait(10)

    busy = Worker(layer, [route("jobs", slow)], name="busy", heartbeat_interval=0.05)
    idle = Worker(layer, [route("http.request", hello)], name="idle", heartbeat_interval=0.05)
    threads = [threading.Thread(target=w.run, kwargs={"install_signals": False})
               for w in (busy, idle)]
    for thread in threads:
        thread.start()
    try:
        layer.send("jobs", {"n": 1})
        assert started.wait(10)
        time.sleep(0.2)  # a heartbeat while busy
        result = run("--layer", url, "--json")
        data = json.loads(result.output)
        workers = {w["name"]: w for w in data["workers"]}
        assert (workers["busy"]["state"], workers["busy"]["current"]) == ("busy", "jobs")
        assert workers["idle"]["state"] == "idle"
        assert result.exit_code == 0
        release.set()
        time.sleep(0.2)
        data = json.loads(run("--layer", url, "--json").output)
        done = {w["name"]: w for w in data["workers"]}["busy"]
        assert (done["state"], done["processed"]) == ("idle", 1)
    finally:
        release.set()
        for worker in (busy, idle):
            worker.stop()
        for thread in threads:
            thread.join(10)
        layer.flush()
        layer.close()
