"""Priority 4: ``manage.py runworker`` and ``manage.py runserver``, with real processes.

The process tests wait on real time (start-up, sockets); every wait has a deadline.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from django.core.management import get_commands

from asgi_spec.layers.sqlite import SQLiteChannelLayer
from asgi_spec.registry import KIND_WORKER
from tests.django.project.views import BIG_FILE
from worker.django.management.commands import runworker as runworker_command
from worker.django.management.commands.runserver import access_line

REPO = Path(__file__).resolve().parents[2]
INTERFACESERVER = Path(sys.executable).with_name("interfaceserver")
SETTINGS = "tests.django.project.settings"
DEADLINE = 20.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SWITCHBOARD_WORKER_", "INTERFACESERVER_"))}
    env.pop("CHANNEL_LAYER_URL", None)
    env.pop("REDIS_URL", None)
    env["DJANGO_SETTINGS_MODULE"] = SETTINGS
    env.update(extra)
    return env


def manage(*args: str, env: dict[str, str], **kwargs):
    return subprocess.Popen([sys.executable, "-m", "django", *args], cwd=REPO, env=env,
                            **kwargs)


def wait_for_http(url: str, process=None) -> None:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            pytest.fail(f"the server exited early with {process.returncode}")
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"timed out waiting for {url}")


def stop(process) -> tuple[int, str, str]:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    try:
        out, err = process.communicate(timeout=DEADLINE)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
    return process.returncode, (out or b"").decode(), (err or b"").decode()


def multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes]]) -> tuple[bytes, str]:
    boundary = "switchboard-boundary-1234"
    parts = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
                     f"{value}\r\n".encode())
    for name, (filename, data) in files.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
                     f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'
                     .encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


# -- runworker: argument handling -------------------------------------------------------


@pytest.fixture
def saved_environ():
    """os.environ is restored after the test (prepare() sets runworker's variables)."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def test_both_commands_are_ours():
    """runserver and runworker resolve to worker.django (it comes before staticfiles)."""
    commands = get_commands()
    assert commands["runworker"] == "worker.django"
    assert commands["runserver"] == "worker.django"


def test_runworker_defaults_to_the_settings(monkeypatch, saved_environ):
    """Without --layer or a routing, runworker consumes CHANNEL_LAYERS['default'] with its
    routing (through the env defaults runworker reads); Django's own options are stripped."""
    monkeypatch.delenv("SWITCHBOARD_WORKER_LAYER", raising=False)
    monkeypatch.delenv("SWITCHBOARD_WORKER_ROUTING", raising=False)
    monkeypatch.setenv("CHANNEL_LAYER_URL", "sqlite:///tmp/x.db")
    from django.test import override_settings

    with override_settings(CHANNEL_LAYER_URL=None):
        args = runworker_command.prepare(["--settings", SETTINGS, "--threads", "2",
                                          "--traceback"])
    assert args == ["--threads", "2"]
    assert os.environ["SWITCHBOARD_WORKER_LAYER"] == "worker.django.layers:raw.default"
    assert os.environ["SWITCHBOARD_WORKER_ROUTING"] == "worker.django.routing:channel_routing"


def test_runworker_layer_may_be_an_alias_or_a_url(monkeypatch, saved_environ):
    """--layer ALIAS names a CHANNEL_LAYERS alias; a URL passes through unchanged; an
    unknown alias is a clear error."""
    from django.core.management.base import CommandError
    from django.test import override_settings

    monkeypatch.delenv("SWITCHBOARD_WORKER_LAYER", raising=False)
    layers = {"default": {"BACKEND": "sqlite:///a.db", "ROUTING": "x.y"},
              "other": {"BACKEND": "sqlite:///b.db",
                        "ROUTING": "tests.django.project.routing.channel_routing"}}
    with override_settings(CHANNEL_LAYERS=layers):
        assert runworker_command.prepare(["--layer", "other"]) == [
            "--layer", "worker.django.layers:raw.other"]
        assert os.environ["SWITCHBOARD_WORKER_ROUTING"] == (
            "worker.django.routing:channel_routing_other")
        assert runworker_command.prepare(["--layer=redis://h:1/0"]) == [
            "--layer", "redis://h:1/0"]
        with pytest.raises(CommandError, match="neither a layer URL nor an alias"):
            runworker_command.prepare(["--layer", "nosuch"])


def test_runworker_refuses_the_in_memory_layer():
    """manage.py runworker with a memory:// layer exits 1 with switchboard.E004, saying why."""
    done = subprocess.run([sys.executable, "-m", "django", "runworker"], cwd=REPO,
                          env=clean_env(CHANNEL_LAYER_URL="memory://"), capture_output=True,
                          timeout=DEADLINE)
    assert done.returncode == 1
    err = done.stderr.decode()
    assert "switchboard.E004" in err and "inside one process" in err


def test_runworker_help_is_the_runworker_help():
    """manage.py runworker --help lists the console script's options."""
    out = subprocess.run([sys.executable, "-m", "django", "runworker", "--help"], cwd=REPO,
                         env=clean_env(), capture_output=True, timeout=DEADLINE, check=True)
    text = out.stdout.decode()
    for option in ("--layer", "--only-channels", "--exclude-channels", "--threads",
                   "--processes", "--name"):
        assert option in text


# -- real processes ------------------------------------------------------------------


@pytest.mark.slow
def test_interfaceserver_and_manage_py_runworker_serve_django_over_sqlite(tmp_path):
    """interfaceserver + `manage.py runworker --processes 2` over the SQLite layer serve the
    project's Django views over real HTTP: a plain view, a 700 KB multipart upload (streamed
    through body_channel), a 768 KB FileResponse and a 404."""
    url = f"sqlite:///{tmp_path}/layer.db"
    port = free_port()
    env = clean_env(CHANNEL_LAYER_URL=url)
    server = subprocess.Popen([str(INTERFACESERVER), "--port", str(port), "--layer", url,
                               "--no-access-log"], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    worker = manage("runworker", "--processes", "2", "--name", "djw", env=env,
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    layer = SQLiteChannelLayer(tmp_path / "layer.db")
    try:
        deadline = time.monotonic() + DEADLINE
        while set(layer.live_processes(KIND_WORKER)) != {"djw-1", "djw-2"}:
            assert worker.poll() is None, worker.stderr.read().decode()
            assert time.monotonic() < deadline, "the workers did not register"
            time.sleep(0.1)
        base = f"http://127.0.0.1:{port}"
        wait_for_http(base + "/plain/", server)
        with urllib.request.urlopen(base + "/plain/", timeout=DEADLINE) as response:
            assert (response.status, response.read()) == (200, b"hello world")
        data = os.urandom(700_000)
        body, content_type = multipart({"name": "big"}, {"attachment": ("up.bin", data)})
        request = urllib.request.Request(base + "/upload/", data=body,
                                         headers={"Content-Type": content_type})
        with urllib.request.urlopen(request, timeout=DEADLINE) as response:
            result = json.loads(response.read())
        assert result["fields"] == {"name": "big"}
        assert result["files"]["attachment"]["sha256"] == hashlib.sha256(data).hexdigest()
        with urllib.request.urlopen(base + "/file/", timeout=DEADLINE) as response:
            assert response.read() == BIG_FILE
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(base + "/nope/", timeout=DEADLINE)
        assert info.value.code == 404
    finally:
        worker_code, _, worker_err = stop(worker)
        stop(server)
        layer.close()
    assert worker_code == 0, worker_err


@pytest.mark.slow
def test_runserver_runs_everything_in_one_process(tmp_path):
    """manage.py runserver serves Django views, static files (--insecure) and WebSocket
    consumers (one with a database-backed channel session) from one process over the
    in-memory layer, logging 1.x-style lines with the client's address and port
    (`HTTP GET /plain/ 200 [0.01, 127.0.0.1:54321]`, `WebSocket CONNECT/DISCONNECT /ws/echo/
    [127.0.0.1:54322]`), and stops cleanly on Ctrl-C."""
    import http.client
    import re

    from websockets.sync.client import connect

    port = free_port()
    env = clean_env(SWITCHBOARD_TEST_DB=str(tmp_path / "db.sqlite3"))
    subprocess.run([sys.executable, "-m", "django", "migrate", "-v", "0"], cwd=REPO, env=env,
                   check=True, timeout=60)
    output = tmp_path / "runserver.out"
    with output.open("wb") as out_file:
        process = manage("runserver", "--noreload", "--insecure", f"127.0.0.1:{port}",
                         env=env, stdout=out_file, stderr=subprocess.PIPE)

    def wait_for_line(line: str) -> None:
        deadline = time.monotonic() + DEADLINE
        while line not in output.read_text():
            assert process.poll() is None, output.read_text()
            assert time.monotonic() < deadline, f"no {line!r} in:\n{output.read_text()}"
            time.sleep(0.05)

    try:
        base = f"http://127.0.0.1:{port}"
        wait_for_http(base + "/plain/", process)
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=DEADLINE)
        connection.request("GET", "/plain/")
        http_port = connection.sock.getsockname()[1]
        assert connection.getresponse().read() == b"hello world"
        connection.close()
        with urllib.request.urlopen(base + "/static/site.css", timeout=DEADLINE) as response:
            assert response.read() == (REPO / "tests/django/project/static/site.css").read_bytes()
        with connect(f"ws://127.0.0.1:{port}/ws/echo/", open_timeout=DEADLINE) as websocket:
            echo_port = websocket.socket.getsockname()[1]
            websocket.send("ping")
            assert websocket.recv(timeout=DEADLINE) == "ping"
        with connect(f"ws://127.0.0.1:{port}/ws/counter/", open_timeout=DEADLINE) as websocket:
            counter_port = websocket.socket.getsockname()[1]
            for expected in ("1", "2"):  # one at a time: frames are not ordered across threads
                websocket.send("x")
                assert websocket.recv(timeout=DEADLINE) == expected
        wait_for_line(f"WebSocket DISCONNECT /ws/counter/ [127.0.0.1:{counter_port}]")
    finally:
        code, _, err = stop(process)
    out = output.read_text()
    assert code == 0, err
    assert "Starting Switchboard development server" in out
    assert re.search(rf"^HTTP GET /plain/ 200 \[\d+\.\d\d, 127\.0\.0\.1:{http_port}\]$", out,
                     re.MULTILINE), out
    assert re.search(r"^HTTP GET /static/site.css 200 \[\d+\.\d\d, 127\.0\.0\.1:\d+\]$",
                     out, re.MULTILINE), out
    assert f"WebSocket CONNECT /ws/echo/ [127.0.0.1:{echo_port}]" in out
    assert f"WebSocket DISCONNECT /ws/echo/ [127.0.0.1:{echo_port}]" in out
    assert f"WebSocket CONNECT /ws/counter/ [127.0.0.1:{counter_port}]" in out


def test_access_lines_look_like_channels_1():
    """The runserver log line formats: HTTP with duration and client address:port, WebSocket
    CONNECT/REJECT; an IPv6 address is bracketed, a record without a port shows the host."""
    from interface_server._accesslog import AccessRecord

    http = AccessRecord(0.0, "127.0.0.1", "GET", "/", "1.1", 200, 5, 0.0234, client_port=54321)
    assert access_line(http) == "HTTP GET / 200 [0.02, 127.0.0.1:54321]"
    ws = AccessRecord(0.0, "127.0.0.1", "WEBSOCKET", "/ws/", "1.1", 101, 0, 0.1,
                      protocol="websocket", client_port=50000)
    assert access_line(ws) == "WebSocket CONNECT /ws/ [127.0.0.1:50000]"
    denied = AccessRecord(0.0, "::1", "WEBSOCKET", "/ws/", "1.1", 403, 0, 0.1,
                          protocol="websocket", client_port=50001)
    assert access_line(denied) == "WebSocket REJECT 403 /ws/ [[::1]:50001]"
    unix = AccessRecord(0.0, None, "GET", "/", "1.1", 404, 0, 0.5)
    assert access_line(unix) == "HTTP GET / 404 [0.50, -]"


def test_log_lines_are_coloured_by_status():
    """With colours on, runserver's lines are styled by status as Django's server does:
    2xx plain, 3xx/404/4xx/5xx each in its own style; without colours, plain text."""
    from io import StringIO

    from worker.django.management.commands.runserver import Command

    def logged(status, **options):
        command = Command(stdout=StringIO(), **options)
        command.log_line(f"HTTP GET / {status} [0.01, 127.0.0.1:5000]", status)
        return command.stdout._out.getvalue()

    coloured = {status: logged(status, force_color=True) for status in (200, 302, 404, 400,
                                                                         500)}
    assert "\x1b[" in coloured[404] and "\x1b[" in coloured[500]
    assert len({coloured[s].split("HTTP")[0] for s in (302, 404, 400, 500)}) == 4
    assert logged(500, no_color=True) == "HTTP GET / 500 [0.01, 127.0.0.1:5000]\n"


def test_static_files_are_served_with_debug_or_insecure():
    """runserver serves static files when DEBUG is on or with --insecure, and never with
    --nostatic."""
    from django.test import override_settings

    from worker.django.management.commands.runserver import Command

    command = Command()
    with override_settings(DEBUG=True):
        assert command.serves_static({"use_static_handler": True})
        assert not command.serves_static({"use_static_handler": False})
    with override_settings(DEBUG=False):
        assert not command.serves_static({"use_static_handler": True})
        assert command.serves_static({"use_static_handler": True, "insecure_serving": True})


@pytest.mark.slow
def test_runserver_restarts_when_code_changes():
    """With Django's autoreloader (the default), touching a project module restarts the
    one-process server, which then serves again."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "django", "runserver", f"127.0.0.1:{port}"], cwd=REPO,
        env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True)
    out = b""
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for_http(base + "/plain/", process)
        time.sleep(1.5)  # the reloader has taken its first snapshot of mtimes
        views = REPO / "tests/django/project/views.py"
        os.utime(views)
        deadline = time.monotonic() + DEADLINE
        os.set_blocking(process.stdout.fileno(), False)
        while out.count(b"Starting Switchboard development server") < 2:
            assert time.monotonic() < deadline, out.decode()
            out += process.stdout.read() or b""
            time.sleep(0.1)
        wait_for_http(base + "/json/", process)
        with urllib.request.urlopen(base + "/json/", timeout=DEADLINE) as response:
            assert response.status == 200
    finally:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(DEADLINE)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
