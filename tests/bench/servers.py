"""The whole-server benchmark: Switchboard next to daphne 4 and uvicorn.

Run it with ``make bench`` (or ``python -m tests.bench.servers``; ``--quick``
for a short development run). It:

1. makes (once) virtual environments in ``.bench/``: daphne 4 + channels 4 +
   channels_redis 4 (``venv-daphne``), uvicorn + uvloop + httptools
   (``venv-uvicorn``) and the load client's websockets + uvloop
   (``venv-client``); installs Debian's ``wrk`` with apt-get if it is missing;
2. starts its own ``redis-server`` on a free port, shared by every contender;
3. for every repetition and every contender, in turn (interleaved), starts a
   fresh server stack on a free loopback port for each group of workloads,
   waits until it answers (polling, never a fixed sleep), runs the workloads,
   and stops every process it started by its PID; Redis is flushed between
   stacks;
4. prints medians, the ratios behind the issue's targets with PASS/MISS, and
   writes ``docs/benchmarks/servers.md`` and ``docs/benchmarks/servers.json``.

Contenders: ``switchboard`` (``interfaceserver`` + ``runworker
tests.bench.app:channel_routing`` on Redis), ``daphne 4`` (the Channels 4 side
of the Django project in ``tests/bench/djangoproject``, channels_redis on the
same Redis), ``uvicorn`` (``tests/bench/peers/raw_asgi.py``, no channel
layer). The same Django project's hello view, with the same settings, is also
served by ``switchboard django`` (``interfaceserver`` + Redis + 2 ``manage.py
runworker``) and ``uvicorn django`` (Django's own ASGI handler). Switchboard's
plain-consumer HTTP is also run with 1, 2 and 4 workers. The workers run with
``--batch-size 16`` (opt-in, for fast consumers such as these).

Workloads: ``wrk`` for HTTP; ``tests/bench/server_client.py`` for WebSocket
echo, the unloaded round trip, group fan-out and idle sockets. Each load is
bounded in count and time and goes to 127.0.0.1 only. Numbers are printed,
never asserted: this is not a test.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import re
import resource
import secrets
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.redis_server import RedisServer, free_port

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
BENCH = ROOT / ".bench"
OUR_BIN = ROOT / ".venv" / "bin"
CLIENT = HERE / "server_client.py"
PEERS = HERE / "peers"
DJANGO_PROJECT = HERE / "djangoproject"
RESULTS = ROOT / "docs" / "benchmarks"


def _django_requirement() -> str:
    """Django as in Switchboard's own environment, so every contender runs the same one."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"django=={version('django')}"
    except PackageNotFoundError:
        return "django>=4.2"


VENVS = {
    "daphne": ["daphne>=4,<5", "channels>=4,<5", "channels_redis>=4,<5", _django_requirement()],
    "uvicorn": ["uvicorn>=0.30", "uvloop", "httptools", "websockets>=13", _django_requirement()],
    "client": ["websockets>=13", "uvloop"],
}

SWITCHBOARD = "switchboard"
SWITCHBOARD_DJANGO = "switchboard django"
PLAIN_ROUTING = "tests.bench.app:channel_routing"
DJANGO_ROUTING = "worker.django.routing:channel_routing"
DAPHNE = "daphne 4"
UVICORN = "uvicorn"
UVICORN_DJANGO = "uvicorn django"
#: ``manage.py runworker`` processes of the Switchboard Django contender.
DJANGO_WORKERS = 2
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024
READY_TIMEOUT = 60.0
#: Python client: this share of one core or more means the client, not the
#: server, may be what limits the number.
CLIENT_BOUND = 0.85


# -- set-up --------------------------------------------------------------------


def venv_python(name: str) -> str:
    """The Python of ``.bench/venv-<name>``, made (or updated) on first use."""
    venv = BENCH / f"venv-{name}"
    python = venv / "bin" / "python"
    stamp = venv / ".bench-requirements"
    wanted = "\n".join(VENVS[name])
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return str(python)
    print(f"setting up {venv} with {' '.join(VENVS[name])} ...", flush=True)
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--upgrade", *VENVS[name]], check=True
    )
    stamp.write_text(wanted)
    return str(python)


def ensure_wrk() -> str:
    """The path of ``wrk``, installed from Debian's packages if missing."""
    found = shutil.which("wrk")
    if found:
        return found
    print("installing wrk with apt-get ...", flush=True)
    subprocess.run("apt-get update -qq && apt-get install -y -qq wrk", shell=True, check=True)
    found = shutil.which("wrk")
    if not found:
        raise SystemExit("wrk is not installed and apt-get could not install it")
    return found


def raise_fd_limit(wanted: int) -> int:
    """Raise RLIMIT_NOFILE (inherited by every process started after) to ``wanted``."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = max(wanted, hard)
    with contextlib.suppress(ValueError, OSError):
        target = min(target, int(Path("/proc/sys/fs/nr_open").read_text()))
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, target))  # root may raise both
    except (ValueError, OSError):
        target = hard
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return target


# -- processes -----------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_kib(pid: int) -> int:
    """VmRSS of process ``pid`` in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


class Proc:
    """One process the harness started; ``stop`` ends it by its PID."""

    def __init__(self, name: str, args: list[str], logdir: Path, **popen: Any) -> None:
        self.name = name
        self.log = logdir / f"{name.replace(' ', '_')}-{secrets.token_hex(3)}.log"
        with open(self.log, "wb") as out:
            self.popen = subprocess.Popen(
                args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **popen
            )
        self.pid = self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, timeout: float = 15.0) -> None:
        if self.popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            self.popen.wait(10)


def http_get(port: int, path: str = "/", timeout: float = 2.0) -> tuple[int, bytes]:
    """A plain HTTP GET on 127.0.0.1 (no proxy settings are ever consulted)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def poll(
    what: str, check: Callable[[], bool], procs: list[Proc], timeout: float = READY_TIMEOUT
) -> None:
    """Call ``check`` every 50 ms until it is true; fail if a process dies or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in procs:
            if not proc.alive():
                raise RuntimeError(
                    f"{proc.name} exited ({proc.popen.returncode}) while "
                    f"waiting for {what}; its log ends with:\n{proc.tail()}"
                )
        with contextlib.suppress(OSError, http.client.HTTPException):
            if check():
                return
        time.sleep(0.05)
    logs = "\n".join(f"--- {p.name}\n{p.tail(1500)}" for p in procs)
    raise RuntimeError(f"timed out after {timeout} s waiting for {what}\n{logs}")


# -- server stacks ---------------------------------------------------------------


@dataclass
class Stack:
    """A running contender: its processes, the one whose RSS counts, its port."""

    name: str
    port: int
    procs: list[Proc] = field(default_factory=list)
    server: Proc | None = None
    cleanup: list[Callable[[], None]] = field(default_factory=list)

    def ws_url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def stop(self) -> None:
        for proc in self.procs:  # the server first: it drains, then the workers go
            with contextlib.suppress(Exception):
                proc.stop()
        for undo in self.cleanup:
            with contextlib.suppress(Exception):
                undo()


def wait_http_ready(stack: Stack) -> None:
    poll(
        f"{stack.name} to answer GET / with 200",
        lambda: http_get(stack.port)[0] == 200,
        stack.procs,
    )


def copy_project(stack: Stack) -> Path:
    """A fresh copy of the Django project under ``.bench/``, removed with the stack."""
    BENCH.mkdir(exist_ok=True)
    project = Path(tempfile.mkdtemp(prefix="bench-project-", dir=BENCH))
    stack.cleanup.append(lambda: shutil.rmtree(project, ignore_errors=True))
    shutil.copytree(
        DJANGO_PROJECT,
        project,
        dirs_exist_ok=True,
        ignore=shutil.ignore_patterns("__pycache__", "*.sqlite3"),
    )
    return project


def django_env(project: Path, server: str, redis_url: str, *path: Path) -> dict[str, str]:
    """The environment of a process serving the Django project as ``server``."""
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(str(p) for p in (project, *path)),
        "DJANGO_SETTINGS_MODULE": "benchsite.settings",
        "BENCH_SERVER": server,
        "BENCH_REDIS_URL": redis_url,
    }


@contextlib.contextmanager
def stopped_on_failure(stack: Stack) -> Iterator[Stack]:
    """Stop every process of ``stack`` (and undo its clean-ups) if the block raises."""
    try:
        yield stack
    except BaseException:
        stack.stop()
        raise


#: ``runworker --batch-size`` for the benchmark's fast consumers.
WORKER_BATCH_SIZE = 16


def start_switchboard(
    name: str,
    redis_url: str,
    workers: int,
    logdir: Path,
    routing: str = PLAIN_ROUTING,
    django: bool = False,
) -> Stack:
    """``runworker`` x ``workers`` (waited for in the registry), then ``interfaceserver``
    (waited for with GET / -> 200). ``django``: ``manage.py runworker`` processes of
    the Django project (its views, its routing, its settings' layer) instead."""
    from asgi_spec import layer_from_url
    from asgi_spec.registry import KIND_WORKER

    stack = Stack(name, free_port())
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    token = secrets.token_hex(3)
    names = [f"bench-{token}-{n}" for n in range(workers)]
    with stopped_on_failure(stack):
        cwd = ROOT
        if django:
            cwd = copy_project(stack)
            env = django_env(cwd, "switchboard", redis_url, ROOT)
        for worker_name in names:
            if django:  # the layer and routing come from the project's settings
                command = [str(OUR_BIN / "python"), "manage.py", "runworker"]
            else:
                command = [str(OUR_BIN / "runworker"), routing, "--layer", redis_url]
            stack.procs.append(
                Proc(
                    f"{name} worker",
                    [
                        *command,
                        "--name",
                        worker_name,
                        "--batch-size",
                        str(WORKER_BATCH_SIZE),
                        "-v",
                        "0",
                    ],
                    logdir,
                    cwd=cwd,
                    env=env,
                )
            )
        layer = layer_from_url(redis_url)
        try:
            poll(
                f"{workers} worker(s) in the registry",
                lambda: set(names) <= set(layer.live_processes(KIND_WORKER)),
                stack.procs,
            )
        finally:
            layer.close()
        server = Proc(
            f"{name} interfaceserver",
            [
                str(OUR_BIN / "interfaceserver"),
                "--bind",
                "127.0.0.1",
                "--port",
                str(stack.port),
                "--layer",
                redis_url,
                "--no-access-log",
                "-v",
                "0",
                "--graceful-timeout",
                "5",
            ],
            logdir,
            cwd=ROOT,
            env=env,
        )
        stack.procs.insert(0, server)
        stack.server = server
        wait_http_ready(stack)
    return stack


def django_bridge_missing() -> str | None:
    """Why the Switchboard Django contender cannot run here (None: it can)."""
    code = (
        "import django, worker.django, worker.django.handler, worker.django.routing; "
        "assert hasattr(worker.django.handler, 'view_consumer')"
    )
    try:
        done = subprocess.run(
            [str(OUR_BIN / "python"), "-c", code],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        return lines[-1] if lines else f"exit {done.returncode}"
    return None


def serve(stack: Stack, args: list[str], logdir: Path, **popen: Any) -> None:
    """Start ``args`` as the stack's server, named after the stack, and wait until it
    answers GET / with 200."""
    stack.server = Proc(stack.name, args, logdir, **popen)
    stack.procs.append(stack.server)
    wait_http_ready(stack)


def uvicorn_command(app: str, app_dir: Path, port: int) -> list[str]:
    """uvicorn (uvloop, httptools, backlog 2048, no access log) serving ``app`` on ``port``."""
    uvicorn = Path(venv_python("uvicorn")).parent / "uvicorn"
    return [
        str(uvicorn),
        app,
        "--app-dir",
        str(app_dir),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--no-access-log",
        "--log-level",
        "warning",
        "--backlog",
        "2048",
    ]


def start_daphne(redis_url: str, logdir: Path) -> Stack:
    stack = Stack(DAPHNE, free_port())
    with stopped_on_failure(stack):
        project = copy_project(stack)
        daphne = Path(venv_python("daphne")).parent / "daphne"
        # Twisted's default listen backlog (50) would make the thousands of
        # connects of fan-out and idle crawl; the peer gets 2048 like the others.
        endpoint = f"tcp:port={stack.port}:interface=127.0.0.1:backlog=2048"
        serve(
            stack,
            [str(daphne), "-e", endpoint, "-v", "0", "benchsite.asgi:application"],
            logdir,
            cwd=project,
            env=django_env(project, "daphne", redis_url),
        )
    return stack


def start_uvicorn(logdir: Path) -> Stack:
    stack = Stack(UVICORN, free_port())
    with stopped_on_failure(stack):
        serve(stack, uvicorn_command("raw_asgi:app", PEERS, stack.port), logdir, cwd=ROOT)
    return stack


def start_uvicorn_django(logdir: Path) -> Stack:
    """uvicorn (uvloop, httptools) running Django's own ASGI handler of the project."""
    stack = Stack(UVICORN_DJANGO, free_port())
    with stopped_on_failure(stack):
        project = copy_project(stack)
        serve(
            stack,
            uvicorn_command("benchsite.django_asgi:application", project, stack.port),
            logdir,
            cwd=project,
            env=django_env(project, "django", ""),
        )
    return stack


@dataclass
class Contender:
    name: str
    start: Callable[[str, Path], Stack]
    groups: list[str]  # which workload groups it runs


# -- workloads -----------------------------------------------------------------


@dataclass
class Settings:
    http_duration: float
    http_warmup: float
    echo_connections: int
    echo_messages: int
    rtt_count: int
    fanout_clients: list[int]
    idle_connections: int


FULL = Settings(
    http_duration=10,
    http_warmup=2,
    echo_connections=100,
    echo_messages=100,
    rtt_count=1000,
    fanout_clients=[1000, 5000],
    idle_connections=10_000,
)
QUICK = Settings(
    http_duration=3,
    http_warmup=1,
    echo_connections=50,
    echo_messages=50,
    rtt_count=300,
    fanout_clients=[200, 1000],
    idle_connections=1000,
)

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(number) * _UNITS[unit]


def parse_wrk(output: str) -> dict[str, Any]:
    result: dict[str, Any] = {}
    found = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if not found:
        raise RuntimeError(f"could not read wrk's output:\n{output}")
    result["per_second"] = float(found.group(1))
    for label, key in (("50%", "p50_ms"), ("90%", "p90_ms"), ("99%", "p99_ms")):
        found = re.search(rf"^\s+{re.escape(label)}\s+([\d.]+\w+)", output, re.M)
        if found:
            result[key] = _ms(found.group(1))
    found = re.search(r"(\d+) requests in", output)
    result["requests"] = int(found.group(1)) if found else 0
    found = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    result["socket_errors"] = sum(map(int, found.groups())) if found else 0
    found = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    result["non_2xx"] = int(found.group(1)) if found else 0
    return result


class Runner:
    def __init__(
        self, settings: Settings, client_python: str, wrk: str, redis: RedisServer
    ) -> None:
        self.settings = settings
        self.client_python = client_python
        self.wrk = wrk
        self.redis = redis

    def cpu(self, stack: Stack) -> float:
        """CPU seconds used so far by the stack's processes and Redis."""
        pids = [*stack.pids]
        if self.redis.process is not None:
            pids.append(self.redis.process.pid)
        return sum(cpu_seconds(pid) for pid in pids)

    def run_wrk(self, stack: Stack, duration: float) -> dict[str, Any]:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        server_before = self.cpu(stack)
        done = subprocess.run(
            [
                self.wrk,
                "-t2",
                "-c50",
                f"-d{duration:g}s",
                "--latency",
                f"http://127.0.0.1:{stack.port}/",
            ],
            capture_output=True,
            text=True,
            timeout=duration + 60,
        )
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        server_cpu = self.cpu(stack) - server_before
        if done.returncode != 0:
            raise RuntimeError(f"wrk failed: {done.stderr[-2000:]}")
        result = parse_wrk(done.stdout)
        client = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        result["client_cpu"] = client / duration
        result["server_cpu"] = server_cpu / duration
        result["server_cpu_ms_per_op"] = (
            server_cpu * 1000 / result["requests"] if result["requests"] else None
        )
        return result

    def client(
        self,
        workload: str,
        url: str,
        timeout: float = 600,
        **options: Any,
    ) -> dict[str, Any]:
        args = [self.client_python, str(CLIENT), workload, "--url", url]
        for key, value in options.items():
            args += [f"--{key.replace('_', '-')}", str(value)]
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
        if done.returncode != 0:
            raise RuntimeError(f"client {workload} failed:\n{done.stderr[-3000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])

    def with_server_cpu(self, stack: Stack, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        before = self.cpu(stack)
        result = run()
        used = self.cpu(stack) - before
        if result.get("round_trips"):
            result["server_cpu_ms_per_op"] = used * 1000 / result["round_trips"]
        return result

    # Workload groups: each runs on a fresh stack.

    def group_http(self, stack: Stack) -> dict[str, Any]:
        s = self.settings
        self.run_wrk(stack, s.http_warmup)  # warm-up, not recorded
        return {"http": self.run_wrk(stack, s.http_duration)}

    def group_ws(self, stack: Stack) -> dict[str, Any]:
        s = self.settings
        url = stack.ws_url("/ws/echo/")
        results = {"http": self.group_http(stack)["http"]}
        results["rtt"] = self.client("rtt", url, count=s.rtt_count)
        results["echo"] = self.with_server_cpu(
            stack,
            lambda: self.client(
                "echo", url, connections=s.echo_connections, messages=s.echo_messages
            ),
        )
        return results

    def group_fanout(self, stack: Stack, clients: int) -> dict[str, Any]:
        return {
            f"fanout {clients}": self.client(
                "fanout",
                stack.ws_url("/ws/group/"),
                clients=clients,
                broadcasts=10,
                timeout=120,
                quiet=10,
            )
        }

    def wait_quiet(self, stack: Stack, timeout: float = 20.0) -> None:
        """Poll until the server has used < 10 ms of CPU over 0.5 s (or ``timeout``)."""
        assert stack.server is not None
        deadline = time.monotonic() + timeout
        last = cpu_seconds(stack.server.pid)
        while time.monotonic() < deadline:
            time.sleep(0.5)
            now = cpu_seconds(stack.server.pid)
            if now - last < 0.01:
                return
            last = now

    def group_idle(self, stack: Stack) -> dict[str, Any]:
        assert stack.server is not None
        count = self.settings.idle_connections
        url = stack.ws_url("/ws/echo/")
        self.client("rtt", url, count=20, warmup=0)  # load what a socket needs, once
        self.wait_quiet(stack)
        before = rss_kib(stack.server.pid)
        args = [
            self.client_python,
            str(CLIENT),
            "idle",
            "--url",
            url,
            "--connections",
            str(count),
            "--timeout",
            "300",
        ]
        client = subprocess.Popen(
            args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT
        )
        try:
            ready = ""
            deadline = time.monotonic() + 300
            while not ready.startswith("READY") and time.monotonic() < deadline:
                readable, _, _ = select.select([client.stdout], [], [], 1.0)
                if readable:
                    ready = client.stdout.readline()
                    if not ready:
                        break
            if not ready.startswith("READY"):
                raise RuntimeError("idle client never became ready")
            opened = int(ready.split()[1])
            self.wait_quiet(stack)
            after = rss_kib(stack.server.pid)
            out, _ = client.communicate("go\n", timeout=120)
        finally:
            if client.poll() is None:
                client.kill()
                client.wait(10)
        result = json.loads(out.strip().splitlines()[-1])
        result.update(
            rss_before_kib=before,
            rss_after_kib=after,
            kib_per_socket=(after - before) / opened if opened else None,
        )
        if opened < count:
            result["error"] = f"only {opened} of {count} sockets opened"
        return {"idle": result}


def run_group(
    runner: Runner,
    contender: Contender,
    group: str,
    logdir: Path,
) -> dict[str, Any]:
    """Start a fresh stack, run one workload group, stop the stack, flush Redis."""
    stack = None
    try:
        stack = contender.start(runner.redis.url, logdir)
        if group == "http":
            return runner.group_http(stack)
        if group == "ws":
            return runner.group_ws(stack)
        if group.startswith("fanout "):
            return runner.group_fanout(stack, int(group.split()[1]))
        if group == "idle":
            return runner.group_idle(stack)
        raise ValueError(group)
    except Exception as exc:
        print(f"  {contender.name} {group}: FAILED: {exc}", flush=True)
        return {group: {"error": str(exc)[-2000:]}}
    finally:
        if stack is not None:
            stack.stop()
        flush_redis(runner.redis)


def flush_redis(server: RedisServer) -> None:
    subprocess.run(
        ["redis-cli", "-p", str(server.port), "FLUSHALL"],
        check=True,
        capture_output=True,
        timeout=30,
    )


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = "unknown"
    with contextlib.suppress(OSError):
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f"{kib / 1024 / 1024:.0f} GiB"

    def version(args: list[str]) -> str:
        try:
            done = subprocess.run(args, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return "unknown"
        text = (done.stdout or done.stderr).strip()
        return text.splitlines()[0].split(" Copyright")[0] if text else "unknown"

    def packages(python: str, names: list[str]) -> dict[str, str]:
        code = (
            "import importlib.metadata as m, json, sys; print(json.dumps("
            "{n: m.version(n) for n in sys.argv[1:]}))"
        )
        done = subprocess.run(
            [python, "-c", code, *names], capture_output=True, text=True, timeout=60
        )
        return json.loads(done.stdout) if done.returncode == 0 else {}

    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "memory": memory,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "redis": version(["redis-server", "--version"]),
        "wrk": version(["wrk", "--version"]),
        "switchboard": packages(
            sys.executable, ["switchboard", "twisted", "autobahn", "redis", "hiredis", "msgpack"]
        ),
        "daphne": packages(
            venv_python("daphne"),
            ["daphne", "channels", "channels-redis", "django", "twisted", "redis"],
        ),
        "uvicorn": packages(
            venv_python("uvicorn"), ["uvicorn", "uvloop", "httptools", "websockets", "django"]
        ),
        "client": packages(venv_python("client"), ["websockets", "uvloop"]),
    }


# -- summary -------------------------------------------------------------------


#: (result key, field, label, higher is better, format)
METRICS = [
    ("http", "per_second", "HTTP hello: req/s", True, "{:,.0f}"),
    ("http", "p50_ms", "HTTP hello: p50 ms", False, "{:.2f}"),
    ("http", "p99_ms", "HTTP hello: p99 ms", False, "{:.2f}"),
    ("http", "server_cpu_ms_per_op", "HTTP hello: server CPU ms/request", False, "{:.3f}"),
    ("echo", "per_second", "WS echo: round trips/s", True, "{:,.0f}"),
    ("echo", "p50_ms", "WS echo: p50 ms", False, "{:.2f}"),
    ("echo", "p99_ms", "WS echo: p99 ms", False, "{:.2f}"),
    ("echo", "server_cpu_ms_per_op", "WS echo: server CPU ms/round trip", False, "{:.3f}"),
    ("rtt", "p50_ms", "unloaded round trip: p50 ms", False, "{:.3f}"),
    ("rtt", "p99_ms", "unloaded round trip: p99 ms", False, "{:.3f}"),
]


def fanout_metrics(sizes: list[int]) -> list[tuple[str, str, str, bool, str]]:
    rows = []
    for size in sizes:
        key = f"fanout {size}"
        rows += [
            (key, "per_second", f"fan-out {size:,}: deliveries/s", True, "{:,.0f}"),
            (
                key,
                "all_received_seconds",
                f"fan-out {size:,}: s until all received",
                False,
                "{:.2f}",
            ),
            (key, "lost", f"fan-out {size:,}: lost (worst run)", False, "{:,.0f}"),
        ]
    return rows


IDLE_METRIC = ("idle", "kib_per_socket", "idle WebSockets: server KiB/socket", False, "{:.1f}")


def summarise(
    runs: dict[str, dict[str, list[dict[str, Any]]]], metrics: list[tuple[str, str, str, bool, str]]
) -> dict[str, Any]:
    """Medians per contender and metric (the worst for ``lost``), and client load."""
    summary: dict[str, Any] = {}
    for name, workloads in runs.items():
        row: dict[str, Any] = {}
        for key, fld, label, _, _ in metrics:
            results = workloads.get(key, [])
            good = [r for r in results if "error" not in r]
            if fld == "lost":
                values = [r["lost"] for r in good]
                row[label] = max(values) if values else None
            else:
                values = [r[fld] for r in good if r.get(fld) is not None]
                row[label] = statistics.median(values) if values else None
            if len(good) < len(results):
                row.setdefault("failed", {})[key] = len(results) - len(good)
        for key, results in workloads.items():
            loads = [r["client_cpu"] for r in results if r.get("client_cpu") is not None]
            if loads:
                row.setdefault("client_cpu", {})[key] = statistics.median(loads)
            errors = [r["error"] for r in results if "error" in r]
            if errors:
                row.setdefault("errors", {})[key] = errors
        summary[name] = row
    return summary


def client_bound(
    workload: str,
    row: dict[str, Any],
    runs: dict[str, list[dict[str, Any]]],
) -> bool:
    """Whether the load generator may have limited ``workload`` for this contender."""
    load = row.get("client_cpu", {}).get(workload)
    if load is None:
        return False
    if workload == "http":
        # wrk has two threads on a 2-core machine shared with the server: it is
        # the limit when the machine is full and wrk uses as much as the server.
        good = [r for r in runs.get("http", []) if "error" not in r]
        server = statistics.median(r["server_cpu"] for r in good) if good else 0.0
        return load + server >= 1.8 and load >= server
    return load >= CLIENT_BOUND


@dataclass
class Target:
    label: str
    goal: str
    value: float | None
    passed: bool | None
    note: str = ""


def ratio(ours: float | None, theirs: float | None) -> float | None:
    if ours is None or not theirs:
        return None
    return ours / theirs


def targets(summary: dict[str, Any], sizes: list[int], django: str | None) -> list[Target]:
    sb = summary.get(SWITCHBOARD, {})
    dp = summary.get(DAPHNE, {})
    uv = summary.get(UVICORN, {})
    out: list[Target] = []

    def add(
        label: str, goal: str, value: float | None, ok: Callable[[float], bool], note: str = ""
    ) -> None:
        out.append(Target(label, goal, value, None if value is None else ok(value), note))

    dj = summary.get(django, {}) if django else {}
    missing = "" if django else "no Switchboard Django contender in this run"
    add(
        "Django hello req/s vs daphne 4",
        ">= 3x",
        ratio(dj.get("HTTP hello: req/s"), dp.get("HTTP hello: req/s")),
        lambda v: v >= 3,
        missing,
    )
    add(
        "Django hello p99 vs daphne 4",
        "<= 0.5x",
        ratio(dj.get("HTTP hello: p99 ms"), dp.get("HTTP hello: p99 ms")),
        lambda v: v <= 0.5,
        missing,
    )
    add(
        "plain consumer req/s vs uvicorn",
        ">= 0.25x",
        ratio(sb.get("HTTP hello: req/s"), uv.get("HTTP hello: req/s")),
        lambda v: v >= 0.25,
    )
    add(
        "WS echo round trips/s vs daphne 4",
        ">= 2x",
        ratio(sb.get("WS echo: round trips/s"), dp.get("WS echo: round trips/s")),
        lambda v: v >= 2,
    )
    add(
        "unloaded round trip p50",
        "<= 0.6 ms",
        sb.get("unloaded round trip: p50 ms"),
        lambda v: v <= 0.6,
    )
    for size in sizes:
        label = f"fan-out {size:,}: deliveries/s"
        lost = sb.get(f"fan-out {size:,}: lost (worst run)")
        value = ratio(sb.get(label), dp.get(label))
        note = "" if lost is None else f"lost {lost:,}"
        add(
            f"fan-out {size:,} deliveries/s vs daphne 4, zero loss",
            ">= 5x, 0 lost",
            value,
            lambda v, lost=lost: v >= 5 and lost == 0,
            note,
        )
    add(
        "idle WebSocket, interface server RSS",
        "<= 14 KiB",
        sb.get(IDLE_METRIC[2]),
        lambda v: v <= 14,
    )
    return out


def render(
    summary: dict[str, Any],
    runs: dict[str, Any],
    metrics: list[Any],
    target_rows: list[Target],
    scaling: list[tuple[int, str]],
    host: dict[str, Any],
    args: argparse.Namespace,
    settings: Settings,
    main_names: list[str],
) -> str:
    s = settings
    lines = [
        "# Server benchmark",
        "",
        f"Machine: {host['cpus']} CPUs ({host['cpu']}), {host['memory']}, Python "
        f"{host['python']}, {host['redis']}, {host['wrk']}.",
        f"Medians of {args.repeat} interleaved run(s){' (--quick)' if args.quick else ''}; "
        "ratios are Switchboard / peer in the same run. Every server and the load "
        "clients share the same cores; one `redis-server` serves every contender. "
        f"Load average (1 min) before the run: {host['load_average_before']:.2f} "
        "(other work on the machine moves the numbers).",
        *(
            [f"Switchboard's layer URL options: `{args.layer_options}`."]
            if args.layer_options
            else []
        ),
        "Versions: "
        + "; ".join(
            f"{env}: " + ", ".join(f"{k} {v}" for k, v in host.get(env, {}).items())
            for env in ("switchboard", "daphne", "uvicorn", "client")
        )
        + ".",
        "",
        "## Targets",
        "",
        "| target | goal | measured | result |",
        "|---|---|---|---|",
    ]
    for t in target_rows:
        if t.value is None:
            measured, verdict = "-", "NOT RUN"
        else:
            unit = "ms" if "round trip p50" in t.label else ("KiB" if "KiB" in t.goal else "x")
            measured = f"{t.value:.2f} {unit}" if unit != "x" else f"{t.value:.2f}x"
            verdict = "PASS" if t.passed else "MISS"
        note = f" ({t.note})" if t.note else ""
        lines.append(f"| {t.label} | {t.goal} | {measured}{note} | {verdict} |")
    names = [n for n in main_names if n in summary]
    lines += [
        "",
        "## Results",
        "",
        "| workload | " + " | ".join(names) + f" | {SWITCHBOARD} / {DAPHNE} | "
        f"{SWITCHBOARD} / {UVICORN} |",
        "|---|" + "---|" * (len(names) + 2),
    ]
    for key, _fld, label, _higher, fmt in metrics:
        cells = []
        for name in names:
            value = summary[name].get(label)
            if value is None:
                cells.append("failed" if key in summary[name].get("failed", {}) else "-")
                continue
            text = fmt.format(value)
            if client_bound(key, summary[name], runs[name]):
                text += " (client-bound)"
            cells.append(text)
        sb = summary.get(SWITCHBOARD, {}).get(label)
        for peer in (DAPHNE, UVICORN):
            theirs = summary.get(peer, {}).get(label)
            if "lost" in label or sb is None or not theirs:
                cells.append("-")
            else:
                cells.append(f"{sb / theirs:.2f}x")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += django_table(summary, args)
    if scaling:
        lines += [
            "",
            "## Switchboard plain-consumer HTTP by worker count",
            "",
            "| workers | req/s | p50 ms | p99 ms | server CPU ms/request | vs 1 worker |",
            "|---|---|---|---|---|---|",
        ]
        base = summary.get(scaling[0][1], {}).get("HTTP hello: req/s")
        for workers, name in scaling:
            row = summary.get(name, {})
            rps = row.get("HTTP hello: req/s")
            cells = [
                fmt_or_dash(rps, "{:,.0f}"),
                fmt_or_dash(row.get("HTTP hello: p50 ms")),
                fmt_or_dash(row.get("HTTP hello: p99 ms")),
                fmt_or_dash(row.get("HTTP hello: server CPU ms/request"), "{:.3f}"),
                f"{rps / base:.2f}x" if rps and base else "-",
            ]
            lines.append(f"| {workers} | " + " | ".join(cells) + " |")
    loads = []
    for name in summary:
        for key, load in sorted(summary[name].get("client_cpu", {}).items()):
            loads.append(f"{name} {key} {load:.2f}")
    errors = [
        f"- {name}, {key}: {msgs[0].splitlines()[0][:300]}"
        for name in summary
        for key, msgs in summary[name].get("errors", {}).items()
    ]
    lines += [
        "",
        f"HTTP: `wrk -t2 -c50 -d{s.http_duration:g}s --latency` on `GET /` after a "
        f"{s.http_warmup:g} s warm-up. WS echo: {s.echo_connections} connections x "
        f"{s.echo_messages} round trips of 32 B, all at once. Unloaded round trip: one "
        f"connection, {s.rtt_count:,} sequential round trips. Fan-out: N sockets on "
        "`/ws/group/`, one sends a burst of 10 frames, each socket counts what it gets "
        "(deliveries/s = deliveries / time from the first send to the last delivery). "
        f"Idle: {s.idle_connections:,} open WebSockets, (RSS after - RSS before) / "
        "sockets of the server process (Switchboard: the interface server). Server CPU "
        "counts every process of the contender plus Redis.",
        "",
        "Client CPU (share of one core; wrk has two threads): " + "; ".join(loads) + ". "
        f"A number is marked client-bound when the Python client used >= {CLIENT_BOUND} "
        "of a core, or wrk used as much CPU as the server while the two filled the "
        "machine.",
    ]
    if errors:
        lines += ["", "Failures:", "", *errors]
    return "\n".join(lines)


def django_table(summary: dict[str, Any], args: argparse.Namespace) -> list[str]:
    """The Django hello view served three ways, with Switchboard's ratios to each."""
    names = [n for n in (SWITCHBOARD_DJANGO, DAPHNE, UVICORN_DJANGO) if n in summary]
    ours = summary.get(SWITCHBOARD_DJANGO, {})
    if not ours.get("HTTP hello: req/s"):
        return []
    lines = [
        "",
        "## The Django hello view, three ways",
        "",
        "One project and one settings module (`tests/bench/djangoproject`, the admin and "
        "the default middleware installed): "
        f"{SWITCHBOARD_DJANGO} = `interfaceserver` + Redis + {args.django_workers} "
        f"`manage.py runworker`; {DAPHNE} = daphne + channels 4 + channels_redis 4; "
        f"{UVICORN_DJANGO} = uvicorn (uvloop, httptools) running Django's own ASGI handler.",
        "",
        f"| server | req/s | p50 ms | p99 ms | server CPU ms/request | {SWITCHBOARD_DJANGO} "
        "req/s / this | p99 / this |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in names:
        row = summary[name]
        rps, p99 = row.get("HTTP hello: req/s"), row.get("HTTP hello: p99 ms")
        cells = [
            fmt_or_dash(rps, "{:,.0f}"),
            fmt_or_dash(row.get("HTTP hello: p50 ms")),
            fmt_or_dash(p99),
            fmt_or_dash(row.get("HTTP hello: server CPU ms/request"), "{:.3f}"),
            fmt_or_dash(ratio(ours.get("HTTP hello: req/s"), rps), "{:.2f}x"),
            fmt_or_dash(ratio(ours.get("HTTP hello: p99 ms"), p99), "{:.2f}x"),
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def fmt_or_dash(value: float | None, fmt: str = "{:.2f}") -> str:
    return "-" if value is None else fmt.format(value)


# -- main ----------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description="Whole-server benchmark.")
    parser.add_argument(
        "--repeat",
        type=int,
        default=None,
        help="interleaved repetitions (default 3; 1 with --quick)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="one short repetition with fewer connections (development)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="runworker processes of the main Switchboard contender",
    )
    parser.add_argument(
        "--scaling",
        default="1,2,4",
        help="worker counts for the plain-consumer HTTP scaling runs ('' to skip)",
    )
    parser.add_argument(
        "--only", default="", help="comma-separated parts of contender names to keep"
    )
    parser.add_argument(
        "--groups", default="", help="comma-separated workload groups to keep: ws, fanout, idle"
    )
    parser.add_argument(
        "--layer-options",
        default="",
        help="query options for Switchboard's layer URL, e.g. capacity=1000 "
        "(default: none, the layer's defaults)",
    )
    parser.add_argument(
        "--django-workers",
        type=int,
        default=DJANGO_WORKERS,
        help=f"manage.py runworker processes of the Switchboard Django contender "
        f"(default {DJANGO_WORKERS})",
    )
    parser.add_argument(
        "--no-django", action="store_true", help="skip the Switchboard Django contender"
    )
    parser.add_argument("--no-write", action="store_true", help="do not write docs/benchmarks")
    args = parser.parse_args()
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    settings = QUICK if args.quick else FULL

    # A SIGTERM ends the run through the finally blocks, which stop what it started.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    started = time.monotonic()
    load_at_start = os.getloadavg()[0]
    wrk = ensure_wrk()
    client_python = venv_python("client")
    for name in ("daphne", "uvicorn"):
        venv_python(name)
    limit = raise_fd_limit(max(4 * settings.idle_connections, 65536))
    print(f"RLIMIT_NOFILE raised to {limit}", flush=True)

    groups = ["ws", *(f"fanout {n}" for n in settings.fanout_clients), "idle"]
    if args.groups:
        keep = args.groups.split(",")
        groups = [g for g in groups if any(g.startswith(k) for k in keep)]

    def our_url(url: str) -> str:
        return f"{url}?{args.layer_options}" if args.layer_options else url

    def switchboard(
        name: str,
        workers: int,
        django: bool = False,
    ) -> Callable[[str, Path], Stack]:
        routing = DJANGO_ROUTING if django else PLAIN_ROUTING
        return lambda url, logdir: start_switchboard(
            name, our_url(url), workers, logdir, routing=routing, django=django
        )

    contenders = [
        Contender(SWITCHBOARD, switchboard(SWITCHBOARD, args.workers), groups),
        Contender(DAPHNE, lambda url, logdir: start_daphne(url, logdir), groups),
        Contender(UVICORN, lambda url, logdir: start_uvicorn(logdir), groups),
        Contender(UVICORN_DJANGO, lambda url, logdir: start_uvicorn_django(logdir), ["http"]),
    ]
    django = None
    if args.no_django:
        print("the Switchboard Django contender is skipped (--no-django)", flush=True)
    elif (why := django_bridge_missing()) is not None:
        print(f"the Switchboard Django contender is skipped: worker.django: {why}", flush=True)
    else:
        django = SWITCHBOARD_DJANGO
        contenders.insert(
            1, Contender(django, switchboard(django, args.django_workers, True), ["http"])
        )
    main_names = [c.name for c in contenders]
    scaling: list[tuple[int, str]] = []
    for part in filter(None, args.scaling.split(",")):
        workers = int(part)
        if workers == args.workers:
            scaling.append((workers, SWITCHBOARD))
            continue
        name = f"{SWITCHBOARD} ({workers} workers)"
        scaling.append((workers, name))
        contenders.append(Contender(name, switchboard(name, workers), ["http"]))
    if args.only:
        keep = args.only.split(",")
        contenders = [c for c in contenders if any(k in c.name for k in keep)]

    logdir = Path(tempfile.mkdtemp(prefix="switchboard-servers-bench-"))
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
    try:
        with RedisServer() as redis:
            runner = Runner(settings, client_python, wrk, redis)
            for rep in range(args.repeat):
                print(f"repetition {rep + 1}/{args.repeat}", flush=True)
                for contender in contenders:
                    for group in contender.groups:
                        t0 = time.monotonic()
                        results = run_group(runner, contender, group, logdir)
                        for key, result in results.items():
                            runs.setdefault(contender.name, {}).setdefault(key, []).append(result)
                        print(
                            f"  {contender.name:28} {group:12} "
                            f"{time.monotonic() - t0:5.1f} s  {brief(results)}",
                            flush=True,
                        )
    finally:
        shutil.rmtree(logdir, ignore_errors=True)

    metrics = [*METRICS, *fanout_metrics(settings.fanout_clients), IDLE_METRIC]
    summary = summarise(runs, metrics)
    target_rows = targets(summary, settings.fanout_clients, django)
    host = machine()
    host["load_average_before"] = load_at_start
    report = render(summary, runs, metrics, target_rows, scaling, host, args, settings, main_names)
    print()
    print(report)
    print(f"\n(total time {time.monotonic() - started:.0f} s)")
    if not args.no_write:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "servers.json").write_text(
            json.dumps(
                {
                    "machine": host,
                    "args": vars(args),
                    "settings": vars(settings),
                    "targets": [vars(t) for t in target_rows],
                    "summary": summary,
                    "runs": runs,
                },
                indent=2,
            )
            + "\n"
        )
        (RESULTS / "servers.md").write_text(report + "\n")


def brief(results: dict[str, Any]) -> str:
    """One line of progress: the headline number of each result."""
    parts = []
    for key, result in results.items():
        if "error" in result:
            parts.append(f"{key}: error")
        elif key == "idle":
            parts.append(f"idle {result.get('kib_per_socket') or 0:.1f} KiB/socket")
        elif key.startswith("fanout"):
            parts.append(f"{key} {result['per_second']:,.0f}/s lost {result['lost']}")
        else:
            parts.append(
                f"{key} {result.get('per_second', 0):,.0f}/s p50 {result.get('p50_ms', 0):.2f} ms"
            )
    return ", ".join(parts)


if __name__ == "__main__":
    main()
