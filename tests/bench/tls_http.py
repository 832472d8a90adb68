"""HTTP req/s over TLS: HTTP/1.1 and HTTP/2 (ALPN) against the plain-consumer app.

Run it with ``python -m tests.bench.tls_http`` (``--duration``, ``--workers``).
It starts its own ``redis-server``, ``runworker tests.bench.app:channel_routing``
(``--batch-size 16``, as the whole-server benchmark does) and one
``interfaceserver`` with a throwaway certificate (``--ssl-keyfile`` and
``--ssl-certfile``) plus a plain ``-e tcp:`` port for comparison, then runs
``h2load`` (Debian's ``nghttp2-client``) on ``GET /`` for each load below,
after a warm-up, and prints req/s, mean latency and the interface server's CPU
time per request (steadier than req/s on a small shared machine). Every process it started is
stopped by its PID. Numbers are printed, never asserted: this is not a test.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.redis_server import RedisServer, free_port

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

#: (label, scheme, h2load options): -c connections, -m streams per connection.
LOADS = [
    ("HTTP/1.1 plain, 50 connections", "http", ["--h1", "-c", "50"]),
    ("HTTP/1.1 TLS, 50 connections", "https", ["--h1", "-c", "50"]),
    ("HTTP/2 TLS, 50 connections x 1 stream", "https", ["-c", "50", "-m", "1"]),
    ("HTTP/2 TLS, 5 connections x 10 streams", "https", ["-c", "5", "-m", "10"]),
    ("HTTP/2 TLS, 1 connection x 50 streams", "https", ["-c", "1", "-m", "50"]),
]


def wait(what: str, ready: object, procs: list[subprocess.Popen[bytes]], log: Path,
         timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not ready():  # type: ignore[operator]
        if any(p.poll() is not None for p in procs) or time.monotonic() > deadline:
            raise SystemExit(f"gave up waiting for {what}:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def answers(port: int) -> bool:
    """``GET /`` on the plain port gets 200 (the server and a worker are up)."""
    import http.client

    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", "/")
        return conn.getresponse().status == 200
    except OSError:
        return False


def h2load(url: str, options: list[str], duration: float) -> dict[str, float]:
    done = subprocess.run(["h2load", "-t", "1", "-D", f"{duration:g}", *options, url],
                          capture_output=True, text=True, timeout=duration + 60)
    text = done.stdout
    rate = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", text)
    ok = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed",
                   text)
    latency = re.search(r"time for request:\s+([\d.]+)(\w+)\s+([\d.]+)(\w+)\s+([\d.]+)(\w+)",
                        text)
    if not (rate and ok):
        raise SystemExit(f"could not read h2load's output:\n{text}\n{done.stderr}")

    def ms(value: str, unit: str) -> float:
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    return {"rps": float(rate[1]), "ok": int(ok[1]), "failed": int(ok[2]),
            "mean_ms": ms(latency[5], latency[6]) if latency else float("nan")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per load")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before each load")
    parser.add_argument("--workers", type=int, default=1, help="runworker processes")
    args = parser.parse_args()
    if shutil.which("h2load") is None:
        raise SystemExit("h2load is missing: apt-get install nghttp2-client")
    from tests.interface_server.certificates import TestCA

    tmp = Path(tempfile.mkdtemp(prefix="tls-bench-"))
    redis = RedisServer().start()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        issued = TestCA(tmp).issue("localhost")
        tls_port, plain_port = free_port(), free_port()
        log_path = tmp / "processes.log"
        log = log_path.open("wb")
        for n in range(args.workers):
            procs.append(subprocess.Popen(
                [str(BIN / "runworker"), "tests.bench.app:channel_routing", "--layer",
                 redis.url, "--name", f"tls-bench-{n}", "--batch-size", "16", "-v", "0"],
                cwd=ROOT, stdout=log, stderr=log))
        server = subprocess.Popen(
            [str(BIN / "interfaceserver"), "--layer", redis.url, "-b", "127.0.0.1",
             "-p", str(tls_port), "--ssl-keyfile", str(issued.key), "--ssl-certfile",
             str(issued.cert), "-e", f"tcp:{plain_port}:interface=127.0.0.1",
             "--no-access-log", "-v", "0"], cwd=ROOT, stdout=log, stderr=log)
        procs.append(server)
        from asgi_spec import layer_from_url

        layer = layer_from_url(redis.url)
        wait("the workers", lambda: len(layer.live_processes("worker")) >= args.workers, procs,
             log_path)
        layer.close()
        ports = {"http": plain_port, "https": tls_port}
        wait("the server", lambda: answers(plain_port), procs, log_path)
        print(f"{'load':<42} {'req/s':>8} {'mean ms':>8} {'server CPU ms/req':>18} "
              f"{'failed':>6}")
        for label, scheme, options in LOADS:
            url = f"{scheme}://127.0.0.1:{ports[scheme]}/"
            h2load(url, options, args.warmup)
            before = cpu_seconds(server.pid)
            result = h2load(url, options, args.duration)
            cpu_ms = (cpu_seconds(server.pid) - before) * 1000 / max(result["ok"], 1)
            print(f"{label:<42} {result['rps']:>8,.0f} {result['mean_ms']:>8.1f} "
                  f"{cpu_ms:>18.3f} {result['failed']:>6}", flush=True)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        redis.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
