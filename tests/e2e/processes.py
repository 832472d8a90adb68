"""Real ``interfaceserver`` and ``runworker`` processes for the end-to-end tests.

How this works: ``Stack`` starts processes on free loopback ports, each with
its stdout and stderr in files under a log directory (never pipes, so a chatty
process cannot block on a full pipe), and remembers them. ``wait_ready`` polls
a condition (the port accepts connections; the worker's entry with its PID is
in the layer's registry) with a deadline, never a fixed sleep, and fails with
the process's output when the process dies or the deadline passes.
``Stack.stop_all`` (called by the fixtures' teardown) stops every process it
started by its PID: SIGTERM, then SIGKILL past a deadline. ``explain()`` gives
the tail of every process's output, for assertion messages.

The processes run from the repository root with a cleaned environment (no
``INTERFACESERVER_*``, ``SWITCHBOARD_WORKER_*``, ``CHANNEL_LAYER_URL``,
``REDIS_URL`` or ``PORT`` from the caller), so only the given options apply.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from asgi_spec.registry import KIND_WORKER
from tests.redis_server import free_port

REPO = Path(__file__).resolve().parents[2]
#: The routing of the consumers in ``tests/e2e/app.py``.
ROUTING = "tests.e2e.app:channel_routing"
#: The ``runworker`` console script of this virtualenv.
RUNWORKER = Path(sys.executable).with_name("runworker")
#: How long a process gets to become ready, and to exit after SIGTERM.
START_TIMEOUT = 20.0
STOP_TIMEOUT = 15.0

_DROPPED_PREFIXES = ("INTERFACESERVER_", "SWITCHBOARD_WORKER_")
_DROPPED = {"CHANNEL_LAYER_URL", "REDIS_URL", "PORT", "LISTEN_FDS", "LISTEN_PID"}

T = TypeVar("T")


def clean_env() -> dict[str, str]:
    """This process's environment without the variables the commands read."""
    return {k: v for k, v in os.environ.items()
            if k not in _DROPPED and not k.startswith(_DROPPED_PREFIXES)}


def wait_until(predicate: Callable[[], T], what: str, timeout: float = START_TIMEOUT,
               interval: float = 0.02, explain: Callable[[], str] | None = None) -> T:
    """Poll ``predicate`` until it returns something truthy; return that.

    Raises ``AssertionError`` naming ``what`` (plus ``explain()``) past ``timeout``.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            details = f"\n{explain()}" if explain is not None else ""
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}{details}")
        time.sleep(interval)


class Process:
    """One child process with its output in files; stopped only by its own PID."""

    def __init__(self, name: str, argv: list[str], log_dir: Path) -> None:
        self.name = name
        self.argv = argv
        self.stdout_path = log_dir / f"{name}.stdout.log"
        self.stderr_path = log_dir / f"{name}.stderr.log"
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        with self.stdout_path.open("ab") as out, self.stderr_path.open("ab") as err:
            self.popen = subprocess.Popen(self.argv, stdout=out, stderr=err, cwd=REPO,
                                          env=clean_env(), stdin=subprocess.DEVNULL)
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None, f"{self.name} was never started"
        return self.popen.pid

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.popen is None else self.popen.poll()

    def output(self, tail: int = 3000) -> str:
        """The last ``tail`` characters of its stderr and of its stdout."""
        parts = []
        for label, path in (("stderr", self.stderr_path), ("stdout", self.stdout_path)):
            text = path.read_text(errors="replace") if path.exists() else ""
            if text:
                parts.append(f"--- {self.name} {label} (last {tail} chars) ---\n{text[-tail:]}")
        return "\n".join(parts) or f"--- {self.name}: no output ---"

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    def describe(self) -> str:
        state = "running" if self.running else f"exited with {self.returncode}"
        pid = self.popen.pid if self.popen is not None else "-"
        return f"{self.name} (pid {pid}, {state})\n{self.output()}"

    def send_signal(self, signum: int) -> None:
        """Signal this process by its PID (no-op once it has exited)."""
        if self.running:
            os.kill(self.pid, signum)

    def kill(self) -> int:
        """SIGKILL it and reap it; its exit status."""
        self.send_signal(signal.SIGKILL)
        return self.wait(STOP_TIMEOUT)

    def wait(self, timeout: float) -> int:
        assert self.popen is not None
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.name} did not exit within {timeout:g} s\n"
                                 f"{self.describe()}") from None

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM, wait up to ``timeout``, then SIGKILL. Its exit status."""
        if self.popen is None:
            return None
        if self.running:
            os.kill(self.pid, signal.SIGTERM)
            try:
                return self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
        return self.popen.wait(timeout)

    def check_alive(self) -> None:
        if not self.running:
            raise AssertionError(f"{self.name} exited early\n{self.describe()}")


class InterfaceServer(Process):
    """``python -m interface_server`` on a free port of 127.0.0.1."""

    def __init__(self, name: str, layer_url: str, log_dir: Path, options: tuple[str, ...] = (),
                 port: int | None = None) -> None:
        self.port = port or free_port()
        super().__init__(name, [sys.executable, "-m", "interface_server", "--layer", layer_url,
                                "-b", "127.0.0.1", "-p", str(self.port), *options], log_dir)

    def accepts(self) -> bool:
        self.check_alive()
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
        except OSError:
            return False
        return True

    def wait_ready(self, timeout: float = START_TIMEOUT) -> InterfaceServer:
        wait_until(self.accepts, f"{self.name} to listen on port {self.port}", timeout,
                   explain=self.describe)
        return self

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def ws_url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"


class Worker(Process):
    """The ``runworker`` console script running ``routing`` (default ``ROUTING``),
    registered as ``name``."""

    def __init__(self, name: str, layer_url: str, log_dir: Path,
                 options: tuple[str, ...] = (), routing: str = ROUTING) -> None:
        super().__init__(name, [str(RUNWORKER), routing, "--layer", layer_url, "--name", name,
                                *options], log_dir)

    def registered(self, layer: Any) -> bool:
        """Its registry entry, written by this very process, is live in ``layer``."""
        info = layer.live_processes(KIND_WORKER).get(self.name)
        return isinstance(info, dict) and info.get("pid") == self.pid

    def wait_ready(self, layer: Any, timeout: float = START_TIMEOUT) -> Worker:
        def ready() -> bool:
            self.check_alive()
            return self.registered(layer)

        wait_until(ready, f"worker {self.name} to register", timeout, explain=self.describe)
        return self


class Stack:
    """The processes of one test (or module): started here, stopped here by PID."""

    def __init__(self, layer_url: str, log_dir: Path, layer: Any) -> None:
        self.layer_url = layer_url
        self.log_dir = log_dir
        self.layer = layer  # this test process's own connection, for the registry
        self.processes: list[Process] = []
        self._names: set[str] = set()

    def _unique(self, name: str) -> str:
        base, n = name, 1
        while name in self._names:
            n += 1
            name = f"{base}-{n}"
        self._names.add(name)
        return name

    def server(self, *options: str, name: str = "server", port: int | None = None,
               wait: bool = True) -> InterfaceServer:
        process = InterfaceServer(self._unique(name), self.layer_url, self.log_dir,
                                  options, port)
        self.processes.append(process.start())
        return process.wait_ready() if wait else process

    def worker(self, *options: str, name: str = "worker", wait: bool = True,
               routing: str = ROUTING) -> Worker:
        process = Worker(self._unique(name), self.layer_url, self.log_dir, options, routing)
        self.processes.append(process.start())
        return process.wait_ready(self.layer) if wait else process

    def explain(self) -> str:
        """Every process's state and output tail, for a failure message."""
        return "\n".join(process.describe() for process in self.processes)

    def stop_all(self) -> None:
        """SIGTERM every live process at once, then wait (SIGKILL past the deadline)."""
        for process in self.processes:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for process in self.processes:
            if process.popen is None:
                continue
            try:
                process.popen.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.popen.wait(STOP_TIMEOUT)
