"""Real processes for ``ChannelLiveServerTestCase``: an interface server and workers.

How this works: ``LiveStack`` runs ``python -m interface_server`` and N ``python
-m django runworker`` processes on a channel layer of its own (a temporary
SQLite file unless given a URL, e.g. Redis), with the *test* database. The
children cannot inherit the test process's settings changes, so it writes a
small settings module into its temporary directory: the project's settings
(``from <DJANGO_SETTINGS_MODULE> import *``), then every database's ``NAME``
set to the test database's name and every ``CHANNEL_LAYERS`` alias set to the
stack's layer. The children run with that module and the test process's
``sys.path``. An in-memory SQLite test database cannot be shared with another
process, so it is refused with a message saying what to set (a file:
``DATABASES["default"]["TEST"]["NAME"]``).

``start`` waits (polling, with a deadline) until the port accepts connections
and every worker's heartbeat, with its PID, is in the layer's registry; it
fails with the tail of each process's output. ``stop`` sends SIGTERM to each
process it started, by PID, and SIGKILL past a deadline. Each process's
output is in a file in the temporary directory, shown when something fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connections

from asgi_spec import layer_from_url
from asgi_spec.registry import KIND_WORKER
from worker.django.layers import ChannelLayerWrapper, configured_aliases, layer_settings

_DROPPED_PREFIXES = ("INTERFACESERVER_", "SWITCHBOARD_WORKER_")
_DROPPED = {"CHANNEL_LAYER_URL", "REDIS_URL", "PORT", "LISTEN_FDS", "LISTEN_PID",
            "DJANGO_SETTINGS_MODULE"}

_SETTINGS = '''"""Written by ChannelLiveServerTestCase: {module} on the test database and layer."""
import json as _json

from {module} import *  # noqa: F403

_LIVE = _json.loads({payload!r})
DATABASES = {{_a: dict(_c) for _a, _c in DATABASES.items()}}  # noqa: F405
for _alias, _name in _LIVE["databases"].items():
    DATABASES[_alias]["NAME"] = _name
CHANNEL_LAYER_URL = _LIVE["layers"]["default"]
if "CHANNEL_LAYERS" in globals():
    CHANNEL_LAYERS = {{
        _a: {{**{{_k: _v for _k, _v in _c.items()
                if _k not in ("BACKEND", "URL", "CONFIG", "TEST_CONFIG")}},
             "BACKEND": _LIVE["layers"][_a]}}
        for _a, _c in CHANNEL_LAYERS.items()  # noqa: F405
    }}
'''


def free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def shared_database_names() -> dict[str, str]:
    """Each database alias's current (test) name; refuses in-memory SQLite."""
    names = {}
    for alias in settings.DATABASES:
        connection = connections[alias]
        if connection.vendor == "sqlite" and connection.is_in_memory_db():
            raise ImproperlyConfigured(
                f"ChannelLiveServerTestCase runs the worker in another process, which cannot "
                f"see the in-memory SQLite test database of {alias!r}: give it a file, e.g. "
                f"DATABASES[{alias!r}]['TEST'] = {{'NAME': '/tmp/myproject-tests.sqlite3'}}")
        names[alias] = str(connection.settings_dict["NAME"])
    return names


class LiveProcess:
    """One child process, its output in files, stopped by its PID."""

    def __init__(self, name: str, argv: list[str], workdir: Path, env: dict[str, str]) -> None:
        self.name = name
        self.log = workdir / f"{name}.log"
        with self.log.open("ab") as out:
            self.popen = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, env=env)

    @property
    def running(self) -> bool:
        return self.popen.poll() is None

    def output(self, tail: int = 4000) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        state = "running" if self.running else f"exited with {self.popen.returncode}"
        return f"--- {self.name} (pid {self.popen.pid}, {state}) ---\n{text[-tail:]}"


class LiveStack:
    """An interface server and ``workers`` runworker processes sharing one layer."""

    def __init__(self, *, host: str = "127.0.0.1", workers: int = 1, threads: int = 1,
                 layer_url: str | None = None, start_timeout: float = 30.0,
                 stop_timeout: float = 10.0) -> None:
        self.host = host
        self.workers = workers
        self.threads = threads
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.workdir = Path(tempfile.mkdtemp(prefix="switchboard-live-"))
        self.layer_urls = {alias: f"sqlite:///{self.workdir}/layer-{alias}.db"
                           for alias in configured_aliases()}
        self.layer_urls["default"] = layer_url or f"sqlite:///{self.workdir}/layer.db"
        self.port = 0
        self.processes: list[LiveProcess] = []
        self.layers: dict[str, Any] = {}
        self.worker_names = [f"live-{os.getpid()}-{n}" for n in range(1, workers + 1)]

    # -- what the children run -------------------------------------------------------

    def settings_module(self) -> str:
        module = os.environ.get("DJANGO_SETTINGS_MODULE") or getattr(
            settings, "SETTINGS_MODULE", None)
        if not module:
            raise ImproperlyConfigured("ChannelLiveServerTestCase needs DJANGO_SETTINGS_MODULE "
                                       "(the worker processes load the settings from it)")
        payload = json.dumps({"databases": shared_database_names(), "layers": self.layer_urls})
        name = f"switchboard_live_settings_{os.getpid()}"
        (self.workdir / f"{name}.py").write_text(
            _SETTINGS.format(module=module, payload=payload), encoding="utf-8")
        return name

    def environment(self, settings_module: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if k not in _DROPPED and not k.startswith(_DROPPED_PREFIXES)}
        path = [str(self.workdir), os.getcwd(), *(p for p in sys.path if p)]
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(path))
        env["DJANGO_SETTINGS_MODULE"] = settings_module
        return env

    # -- the test process's side ---------------------------------------------------------

    def wrappers(self) -> dict[str, ChannelLayerWrapper]:
        """The stack's layers, for ``swap_layers`` in the test process."""
        return {alias: ChannelLayerWrapper(layer, alias, layer_settings(alias).routing)
                for alias, layer in self.layers.items()}

    @property
    def worker_pids(self) -> list[int]:
        return [p.popen.pid for p in self.processes if p.name in self.worker_names]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    # -- start and stop -------------------------------------------------------------

    def start(self) -> LiveStack:
        env = self.environment(self.settings_module())
        for alias, url in self.layer_urls.items():
            self.layers[alias] = layer_from_url(url)
        for name in self.worker_names:
            self.processes.append(LiveProcess(name, [
                sys.executable, "-m", "django", "runworker", "--name", name,
                "--threads", str(self.threads)], self.workdir, env))
        self.port = free_port(self.host)
        self.processes.append(LiveProcess("interfaceserver", [
            sys.executable, "-m", "interface_server", "--layer", self.layer_urls["default"],
            "-b", self.host, "-p", str(self.port)], self.workdir, env))
        self._wait(self._ready, "the interface server to listen and the workers to register")
        return self

    def _accepts(self) -> bool:
        try:
            socket.create_connection((self.host, self.port), timeout=0.5).close()
        except OSError:
            return False
        return True

    def _ready(self) -> bool:
        live = self.layers["default"].live_processes(KIND_WORKER)
        pids = {p.name: p.popen.pid for p in self.processes}
        registered = all(isinstance(live.get(name), dict)
                         and live[name].get("pid") == pids[name] for name in self.worker_names)
        return registered and self._accepts()

    def _wait(self, ready: Any, what: str) -> None:
        deadline = time.monotonic() + self.start_timeout
        while not ready():
            dead = [p for p in self.processes if not p.running]
            if dead or time.monotonic() > deadline:
                reason = "a process exited" if dead else f"timed out after {self.start_timeout:g} s"
                raise RuntimeError(f"ChannelLiveServerTestCase: {reason} waiting for {what}\n"
                                   + self.explain())
            time.sleep(0.05)

    def explain(self) -> str:
        return "\n".join(p.output() for p in self.processes)

    def stop(self) -> None:
        """SIGTERM every process by its PID, SIGKILL past the deadline; remove the files."""
        for process in self.processes:
            if process.running:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.popen.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        for process in self.processes:
            try:
                process.popen.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.popen.pid, signal.SIGKILL)
                process.popen.wait()
        for layer in self.layers.values():
            with contextlib.suppress(Exception):
                layer.close()
        shutil.rmtree(self.workdir, ignore_errors=True)
