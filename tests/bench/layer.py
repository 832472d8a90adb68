"""The channel-layer benchmark: Switchboard's backends next to channels_redis 4.

Run it with ``make bench-layer`` (or ``python -m tests.bench.layer``). It:

1. makes (once) a separate virtual environment in ``.bench/`` with
   channels_redis 4, the Channels 4 Redis layer, so the peer runs with its own
   dependencies;
2. starts its own ``redis-server`` on a free port, shared by every contender;
3. runs each workload of ``tests/bench/layer_workloads.py`` for every
   contender, interleaved, ``--repeat`` times, flushing Redis between runs;
4. prints medians and the ratio of each Redis contender to channels_redis,
   and writes ``docs/benchmarks/layer.json`` and ``docs/benchmarks/layer.md``.

Numbers are printed, never asserted: this is not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[2]
WORKLOADS = Path(__file__).with_name("layer_workloads.py")
PEER_VENV = ROOT / ".bench" / "venv-channels-redis"
PEER_REQUIREMENT = "channels_redis>=4,<5"
RESULTS = ROOT / "docs" / "benchmarks"
PEER = "channels_redis 4"


def peer_python() -> str:
    """The Python of the peer's virtual environment, made on first use."""
    python = PEER_VENV / "bin" / "python"
    if not python.exists():
        print(f"setting up {PEER_VENV} with {PEER_REQUIREMENT} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", PEER_REQUIREMENT],
                       check=True)
    return str(python)


def run_workload(python: str, adapter: str, url: str, workload: str,
                 **extra: Any) -> dict[str, Any]:
    args = [python, str(WORKLOADS), "--adapter", adapter, "--url", url, "--workload", workload]
    for key, value in extra.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"{adapter} {workload} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout)


def run_multiprocess(python: str, adapter: str, url: str, duration: float,
                     producers: int = 2, consumers: int = 2) -> dict[str, Any]:
    """``producers`` and ``consumers`` processes on one channel: messages/s in total."""
    base = [python, str(WORKLOADS), "--adapter", adapter, "--url", url]
    start_at = time.time() + 2.0
    consumer = [*base, "--workload", "consume", "--start-at", str(start_at)]
    producer = [*base, "--workload", "produce", "--start-at", str(start_at),
                "--duration", str(duration)]
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=ROOT)
             for command in [consumer] * consumers + [producer] * producers]
    outputs = []
    for proc in procs:
        out, _ = proc.communicate(timeout=300)
        if proc.returncode != 0:
            raise RuntimeError(f"{adapter} multi-process run failed (exit {proc.returncode})")
        outputs.append(json.loads(out))
    received = sum(o.get("received", 0) for o in outputs)
    sent = sum(o.get("sent", 0) for o in outputs)
    first = min(o["started"] for o in outputs if "started" in o)
    last = max((o["last"] for o in outputs if o.get("last")), default=first)
    return {"sent": sent, "received": received,
            "per_second": received / max(last - first, 1e-9)}


def flush_redis(server: RedisServer) -> None:
    subprocess.run(["redis-cli", "-p", str(server.port), "FLUSHALL"], check=True,
                   capture_output=True)


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    redis_version = subprocess.run(["redis-server", "--version"], capture_output=True,
                                   text=True).stdout.strip()
    return {"cpus": os.cpu_count(), "cpu": cpu, "python": platform.python_version(),
            "redis": redis_version, "platform": platform.platform()}


def main() -> None:
    parser = argparse.ArgumentParser(description="Channel-layer benchmark.")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--duration", type=float, default=2.0)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--no-peer", action="store_true", help="skip channels_redis")
    parser.add_argument("--no-write", action="store_true", help="do not write docs/benchmarks")
    parser.add_argument("--only", default="", help="comma-separated name parts to keep")
    args = parser.parse_args()

    ours = sys.executable
    tmp = Path(tempfile.mkdtemp(prefix="switchboard-bench-"))
    sqlite_url = f"sqlite:///{tmp}/bench.db"
    with RedisServer() as server:
        redis_url = server.url
        contenders = [
            ("switchboard redis sync", ours, "switchboard-sync", redis_url),
            ("switchboard redis async", ours, "switchboard-async", redis_url),
            ("switchboard sqlite sync", ours, "switchboard-sync", sqlite_url),
            ("switchboard sqlite async", ours, "switchboard-async", sqlite_url),
            ("switchboard memory sync", ours, "switchboard-sync", "memory://"),
        ]
        if not args.no_peer:
            contenders.insert(0, (PEER, peer_python(), "channels_redis", redis_url))
        if args.only:
            keep = args.only.split(",")
            contenders = [c for c in contenders if any(part in c[0] for part in keep)]
        results: dict[str, dict[str, list[dict[str, Any]]]] = {}
        for rep in range(args.repeat):
            print(f"repetition {rep + 1}/{args.repeat}", flush=True)
            for name, python, adapter, url in contenders:
                row = results.setdefault(name, {})
                for workload in ("pairs", "stream", "burst", "wake"):
                    flush_redis(server)
                    extra = ({"samples": args.samples} if workload == "wake"
                             else {"duration": args.duration})
                    row.setdefault(workload, []).append(
                        run_workload(python, adapter, url, workload, **extra))
                if "memory" not in name:
                    flush_redis(server)
                    row.setdefault("2x2 processes", []).append(
                        run_multiprocess(python, adapter, url, args.duration))
    summary = summarise(results)
    report = render(summary, machine(), args)
    print(report)
    if not args.no_write:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "layer.json").write_text(json.dumps(
            {"machine": machine(), "args": vars(args), "summary": summary, "runs": results},
            indent=2) + "\n")
        (RESULTS / "layer.md").write_text(report + "\n")


def summarise(results: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for name, workloads in results.items():
        row = summary[name] = {}
        for workload, runs in workloads.items():
            if workload == "wake":
                row["wake p50 ms"] = statistics.median(r["p50_ms"] for r in runs)
                row["wake p99 ms"] = statistics.median(r["p99_ms"] for r in runs)
            else:
                row[f"{workload} msg/s"] = statistics.median(r["per_second"] for r in runs)
    return summary


def render(summary: dict[str, Any], host: dict[str, Any], args: argparse.Namespace) -> str:
    columns = ["pairs msg/s", "stream msg/s", "burst msg/s", "2x2 processes msg/s",
               "wake p50 ms", "wake p99 ms"]
    peer = summary.get(PEER, {})
    lines = [
        "# Channel-layer benchmark",
        "",
        f"Machine: {host['cpus']} CPUs ({host['cpu']}), Python {host['python']}, "
        f"{host['redis']}.",
        f"Medians of {args.repeat} interleaved runs; {args.duration} s per throughput run, "
        f"{args.samples} wake samples. Ratios (x) are against {PEER} in the same run.",
        "",
        "| contender | " + " | ".join(columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for name, row in summary.items():
        cells = []
        for column in columns:
            value = row.get(column)
            if value is None:
                cells.append("-")
                continue
            text = f"{value:,.0f}" if "msg/s" in column else f"{value:.3f}"
            base = peer.get(column)
            if base and name != PEER and "redis" in name:
                ratio = value / base if "msg/s" in column else base / value
                text += f" ({ratio:.1f}x)"
            cells.append(text)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "pairs: send then receive, one channel, one process. stream: a producer and a "
        "consumer at once (threads for sync, tasks for async). burst: the same with 64 "
        "messages per call (Switchboard's send_many and receive_batch; channels_redis has "
        "no batch API: 64 concurrent sends). 2x2 processes: two producer "
        "and two consumer processes on one channel. wake: time from send to the return of a "
        "receive that was already blocked (latency ratios: peer / ours).",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
