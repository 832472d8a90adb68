"""Real interface-server and worker processes for the operations tests.

Each process writes to a log file (never a pipe), is stopped by its PID at the end
(SIGTERM, then SIGKILL), and every wait polls with a deadline.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from tests.redis_server import free_port

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
T = TypeVar("T")

#: A worker with a short heartbeat interval (argv[3]; it beats five times per interval),
#: so a kill shows in the registry within a second.
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

    def runworker(self, layer_url: str, name: str, *options: str,
                  routing: str = "tests.ops.app:channel_routing",
                  env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """The real ``runworker`` command (options such as ``--heartbeat-interval``)."""
        return self.start(name, [str(BIN / "runworker"), routing, "--layer", layer_url,
                                 "--name", name, *options], env=env)

    def status_watch(self, layer_url: str, interval: float = 0.1) -> StatusWatch:
        """``switchboard status --watch --json`` writing its documents to a file."""
        path = self.log_dir / "status-watch.jsonl"
        with open(path, "wb") as out:
            process = subprocess.Popen(
                [str(BIN / "switchboard"), "status", "--watch", "--json", "--interval",
                 str(interval), "--layer", layer_url], cwd=REPO, env=clean_env(),
                stdout=out, stderr=subprocess.DEVNULL)
        self.started.append(process)
        return StatusWatch(process, path)

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


class StatusWatch:
    """A running ``switchboard status --watch --json``: one JSON document per line in a file."""

    def __init__(self, process: subprocess.Popen[bytes], path: Path) -> None:
        self.process = process
        self.path = path

    def documents(self) -> list[dict[str, Any]]:
        """Every complete document written so far, oldest first."""
        lines = self.path.read_bytes().split(b"\n")
        return [json.loads(line) for line in lines[:-1] if line.strip()]

    def latest(self) -> dict[str, Any] | None:
        found = self.documents()
        return found[-1] if found else None


def metric(text: bytes, name: str, **labels: str) -> float | None:
    """The value of one sample in the Prometheus text ``text`` (None if absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.decode().splitlines():
        match = re.fullmatch(r"([a-z_]+)(?:\{(.*)\})? (\S+)", line)
        if match and match.group(1) == name and ",".join(
                sorted((match.group(2) or "").split(","))) == wanted:
            return float(match.group(3))
    return None
