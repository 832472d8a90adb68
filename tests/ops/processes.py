"""Real interface-server and worker processes for the operations tests.

Each process writes to a log file (never a pipe), is stopped by its PID at the end
(SIGTERM, then SIGKILL), and every wait polls with a deadline.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
T = TypeVar("T")

#: A worker with a short heartbeat, so a kill shows in the registry within a second.
WORKER_SCRIPT = """
import sys
from asgi_spec import load_layer
from worker.cli import configure_logging
from worker.worker import Worker
configure_logging(1)
layer = load_layer(sys.argv[1])
Worker(layer, "tests.ops.app:channel_routing", name=sys.argv[2],
       heartbeat_interval=float(sys.argv[3]), heartbeat_ttl=float(sys.argv[4])).run()
"""


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("INTERFACESERVER_", "SWITCHBOARD_"))
           and k not in ("CHANNEL_LAYER_URL", "REDIS_URL", "PORT")}
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate: Callable[[], T], what: str, timeout: float = 20.0,
               interval: float = 0.05) -> T:
    deadline = time.monotonic() + timeout
    while True:
        got = predicate()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


class Processes:
    """Starts processes and stops them (by PID) at the end."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None
              ) -> subprocess.Popen[bytes]:
        with open(self.log_dir / f"{name}.log", "ab") as log:
            process = subprocess.Popen(argv, cwd=REPO, env=env or clean_env(), stdout=log,
                                       stderr=subprocess.STDOUT)
        self.started.append(process)
        return process

    def server(self, layer_url: str, *options: str) -> tuple[subprocess.Popen[bytes], int]:
        port = free_port()
        process = self.start("server", [str(BIN / "interfaceserver"), "--layer", layer_url,
                                         "--port", str(port), "--no-access-log", *options])
        wait_until(lambda: self._accepts(port, process), f"the server on port {port}")
        return process, port

    def worker(self, layer_url: str, name: str, heartbeat: float = 0.5,
               ttl: float = 3.0) -> subprocess.Popen[bytes]:
        return self.start(name, [sys.executable, "-c", WORKER_SCRIPT, layer_url, name,
                                 str(heartbeat), str(ttl)])

    def _accepts(self, port: int, process: subprocess.Popen[bytes]) -> bool:
        if process.poll() is not None:
            raise AssertionError(f"the server exited: {self.logs()}")
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", port)) == 0

    def logs(self) -> str:
        return "\n".join(f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}"
                         for path in sorted(self.log_dir.glob("*.log")))

    def stop_all(self) -> None:
        for process in self.started:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.started:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


def get(url: str, timeout: float = 10.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def status_json(layer_url: str, *args: str, env: dict[str, str] | None = None
                ) -> tuple[int, dict[str, Any]]:
    """Run the ``switchboard`` console script; its exit status and JSON."""
    done = subprocess.run([str(BIN / "switchboard"), "status", "--layer", layer_url, "--json",
                           *args], cwd=REPO, env=env or clean_env(), capture_output=True,
                          timeout=30)
    import json

    assert done.stdout, done.stderr.decode(errors="replace")
    return done.returncode, json.loads(done.stdout)
