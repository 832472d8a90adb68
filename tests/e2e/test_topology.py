"""Across machines: Redis, the interface server and two workers, each in a network namespace
of its own, joined by veth links to a bridge -- a small network that this test builds and
tears down itself.

How this works: ``Topology`` makes one namespace per host plus a "switch" namespace that
holds a bridge; each host gets a veth pair whose one end is its ``eth0`` and whose other
end is a port of the bridge. Addresses are loopback-range (``127.77.0.0/24``) on the veths,
allowed off ``lo`` by ``route_localnet`` and by narrowing each host's local ``127/8`` route
to ``127.0.0.1`` -- so no traffic of this test ever leaves loopback addressing, and no
namespace but the ones made here is touched (the test's own namespace included). Every
name carries this process's PID, so two runs at once do not collide; the namespaces (and
with them every veth and the bridge) are deleted at teardown, even after a failure.

The HTTP clients stay in the test's own namespace and reach the server through its UNIX
socket listener (a path on the shared filesystem); the processes themselves can meet only
over the veths, and only Redis listens there. Cutting a host's link is setting its bridge
port down: a cable pulled at the switch, which the host itself does not see.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.clients import CLIENT_TIMEOUT
from tests.e2e.faultload import Ledger, TallyLoad, handlers, tallies, unix
from tests.e2e.processes import RUNWORKER, Process, Stack, wait_until

pytestmark = pytest.mark.slow

TALLY_ROUTING = "tests.e2e.tally_app:channel_routing"
HTTP_TIMEOUT = 2.0
SWEEP = 1.0
NETWORK = "127.77.0"
REDIS_PORT = 6379
#: The loopback-range address of each host on the bridge.
ADDRESSES = {"redis": f"{NETWORK}.1", "server": f"{NETWORK}.2", "w1": f"{NETWORK}.3",
             "w2": f"{NETWORK}.4"}
#: Threads of each worker: at most this many messages can be held by a cut worker.
THREADS = 2
#: How long the worker's link stays cut.
CUT_FOR = 4.0


#: The programs the test runs, and the Debian package of each.
TOOLS = {"ip": "iproute2", "ss": "iproute2", "sysctl": "procps",
         "redis-server": "redis-server", "redis-cli": "redis-tools"}
_SBIN = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"])


def tool(name: str) -> str:
    """The full path of ``name`` (the sbin directories too: ``ip`` lives there)."""
    return shutil.which(name, path=_SBIN) or name


def _missing_prerequisites() -> list[str]:
    missing = []
    if os.geteuid() != 0:
        missing.append("root (network namespaces need CAP_SYS_ADMIN and CAP_NET_ADMIN)")
    for name, package in TOOLS.items():
        if shutil.which(name, path=_SBIN) is None:
            missing.append(f"{name} (apt-get install {package})")
    return missing


def run(*argv: str, check: bool = True) -> str:
    """Run a command (``ip ...``) and return its stdout; fail with its stderr."""
    argv = (tool(argv[0]), *argv[1:])
    done = subprocess.run(argv, capture_output=True, text=True, timeout=15)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed ({done.returncode}): "
                             f"{done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


class Topology:
    """Network namespaces for some hosts and a bridge between them (see module doc)."""

    def __init__(self) -> None:
        self.tag = f"sbtest{os.getpid()}-{uuid.uuid4().hex[:4]}"
        self.switch = f"{self.tag}-switch"
        self.namespaces: list[str] = []

    def ns(self, host: str) -> str:
        return f"{self.tag}-{host}"

    def _add_namespace(self, name: str) -> None:
        run("ip", "netns", "add", name)
        self.namespaces.append(name)

    def build(self, hosts: dict[str, str]) -> None:
        self._add_namespace(self.switch)
        run("ip", "-n", self.switch, "link", "add", "br0", "type", "bridge")
        run("ip", "-n", self.switch, "link", "set", "br0", "up")
        for host, address in hosts.items():
            ns = self.ns(host)
            self._add_namespace(ns)
            port = f"p-{host}"
            run("ip", "-n", self.switch, "link", "add", port, "type", "veth",
                "peer", "name", "eth0", "netns", ns)
            run("ip", "-n", self.switch, "link", "set", port, "master", "br0", "up")
            # Loopback-range addresses on eth0: allowed by route_localnet, and reached
            # over eth0 once the local 127/8 route is narrowed to 127.0.0.1 itself.
            run("ip", "netns", "exec", ns, "sysctl", "-qw",
                "net.ipv4.conf.all.route_localnet=1", "net.ipv4.conf.eth0.route_localnet=1")
            run("ip", "-n", ns, "link", "set", "lo", "up")
            run("ip", "-n", ns, "route", "del", "local", "127.0.0.0/8", "dev", "lo",
                "table", "local")
            run("ip", "-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
            run("ip", "-n", ns, "link", "set", "eth0", "up")

    def exec(self, host: str, *argv: str) -> list[str]:
        """``argv`` run inside ``host``'s namespace (``ip netns exec`` execs it: same PID)."""
        return [tool("ip"), "netns", "exec", self.ns(host), tool(argv[0]), *argv[1:]]

    def cut(self, host: str) -> None:
        run("ip", "-n", self.switch, "link", "set", f"p-{host}", "down")

    def restore(self, host: str) -> None:
        run("ip", "-n", self.switch, "link", "set", f"p-{host}", "up")

    def links(self, host: str) -> list[str]:
        out = run("ip", "-n", self.ns(host), "-o", "link", "show")
        return sorted(line.split(":")[1].strip().split("@")[0] for line in out.splitlines())

    def listeners(self, host: str) -> list[str]:
        """The TCP and UDP sockets listening in ``host``'s namespace (local addresses)."""
        out = run(*self.exec(host, "ss", "-H", "-ltun"))
        return sorted(line.split()[4] for line in out.splitlines() if line.strip())

    def teardown(self) -> None:
        """Delete every namespace made here (their veths and the bridge go with them)."""
        errors = []
        for name in reversed(self.namespaces):
            done = subprocess.run([tool("ip"), "netns", "del", name], capture_output=True,
                                  text=True, timeout=15)
            if done.returncode != 0:
                errors.append(f"{name}: {done.stderr.strip()}")
        self.namespaces.clear()
        assert not errors, f"could not delete namespaces: {errors}"


@pytest.fixture
def topology() -> Iterator[Topology]:
    missing = _missing_prerequisites()
    if missing:
        pytest.fail("the network-namespace test needs " + "; ".join(missing), pytrace=False)
    net = Topology()
    try:
        net.build(ADDRESSES)
        yield net
    finally:
        net.teardown()
    assert not any(name.startswith(net.tag) for name in run("ip", "netns", "list").split())


def net_namespace(pid: int) -> int:
    return os.stat(f"/proc/{pid}/ns/net").st_ino


def redis_cli(net: Topology, *command: str) -> str:
    return run(*net.exec("redis", "redis-cli", "-h", ADDRESSES["redis"], "-p",
                         str(REDIS_PORT), *command), check=False).strip()


def test_hosts_share_only_the_layer_and_a_cut_worker_recovers(
        topology: Topology, tmp_path: Path) -> None:
    """Redis, the interface server and two workers each run in their own network namespace
    and meet only through Redis over veth links: traffic is served end to end by both
    workers, Redis sees one client address per host, and neither worker nor the server
    listens on any port. Then one worker's link is cut under load: the other worker serves
    everything sent meanwhile, at most one request per thread of the cut worker is lost
    (504, never a hang), nothing is handled twice, and when the link comes back the cut
    worker serves again by itself -- nothing is restarted."""
    net = topology
    prefix = f"e2e-netns-{uuid.uuid4().hex[:8]}:"
    url = f"redis://{ADDRESSES['redis']}:{REDIS_PORT}/0?prefix={prefix}"
    sock = tmp_path / "http.sock"
    stack = Stack(url, tmp_path, layer=None)
    redis_dir = tmp_path / "redis"
    redis_dir.mkdir()

    def start(name: str, host: str, *argv: str) -> Process:
        process = Process(name, net.exec(host, *argv), tmp_path).start()
        stack.processes.append(process)
        return process

    try:
        redis = start("redis", "redis", "redis-server", "--port", str(REDIS_PORT), "--bind",
                      ADDRESSES["redis"], "--save", "", "--appendonly", "no",
                      "--protected-mode", "no", "--dir", str(redis_dir),
                      "--daemonize", "no", "--loglevel", "warning")
        wait_until(lambda: redis.check_alive() or redis_cli(net, "PING") == "PONG",
                   "Redis to answer in its namespace", explain=stack.explain)
        server = start("server", "server", sys.executable, "-m", "interface_server",
                       "--layer", url, "-u", str(sock), "--http-timeout", str(HTTP_TIMEOUT))
        workers = {name: start(name, name, str(RUNWORKER), TALLY_ROUTING, "--layer", url,
                               "--name", name, "--threads", str(THREADS))
                   for name in ("w1", "w2")}

        def ready() -> bool:
            for process in stack.processes:
                process.check_alive()
            names = set(redis_cli(net, "HKEYS", f"{prefix}reg:worker").split())
            return sock.exists() and names >= set(workers)

        wait_until(ready, "the server's socket and both workers' registration",
                   explain=stack.explain)
        pids = {name: process.pid for name, process in workers.items()}
        by_pid = {pid: name for name, pid in pids.items()}

        clients = [TallyLoad(f"c{n}", unix(sock)) for n in range(3)]
        with contextlib.ExitStack() as running:
            for client in clients:
                client.start()
                running.callback(client.join, CLIENT_TIMEOUT + 5)
                running.callback(client.stopping.set)

            def served_by(name: str, since: float = 0.0) -> int:
                return sum(1 for c in clients for o in c.outcomes
                           if o.kind == "served" and o.pid == pids[name] and o.began >= since)

            wait_until(lambda: served_by("w1") >= 10 and served_by("w2") >= 10,
                       "both workers to serve", explain=stack.explain)
            # What the processes share: Redis only. Each is in a namespace of its own,
            # each namespace has just lo and eth0, only Redis listens, and Redis sees
            # one connection source per host, each on its own veth address.
            spaces = {name: net_namespace(p.pid) for name, p in
                      (("redis", redis), ("server", server), *workers.items())}
            assert len(set(spaces.values()) | {net_namespace(os.getpid())}) == 5, spaces
            assert all(net.links(host) == ["eth0", "lo"] for host in ADDRESSES)
            assert net.listeners("redis") == [f"{ADDRESSES['redis']}:{REDIS_PORT}"]
            for host in ("server", "w1", "w2"):
                assert net.listeners(host) == [], (host, net.listeners(host))
            sources = {line.split("addr=")[1].split(":")[0]
                       for line in redis_cli(net, "CLIENT", "LIST").splitlines()
                       if "addr=" in line}
            assert {ADDRESSES[h] for h in ("server", "w1", "w2")} <= sources, sources

            net.cut("w1")
            cut_at = time.monotonic()
            wait_until(lambda: time.monotonic() - cut_at >= CUT_FOR, "the cut to last",
                       timeout=CUT_FOR + 1, interval=0.1)
            assert served_by("w2", cut_at) >= 20, "the other worker did not carry on"
            net.restore("w1")
            restored_at = time.monotonic()
            wait_until(lambda: served_by("w1", restored_at) >= 5,
                       "the cut worker to serve again by itself", timeout=30,
                       explain=stack.explain)
            back_after = min(o.ended for c in clients for o in c.outcomes
                             if o.kind == "served" and o.pid == pids["w1"]
                             and o.began >= restored_at) - restored_at
            wait_until(lambda: all(c.count("served", restored_at + back_after) >= 10
                                   for c in clients), "everyone served after the restore",
                       explain=stack.explain)
        for process in stack.processes:
            process.check_alive()
        ledger = Ledger(clients, tallies(p.stdout_path for p in workers.values()))
        ledger.check_clean()
        during = [o for o in ledger.outcomes if cut_at <= o.began < restored_at]
        kinds_during = Ledger(clients, ledger.handled).between(cut_at, restored_at)
        assert not [o for o in during if o.kind == "served" and o.pid == pids["w1"]]
        assert ledger.kinds["refused"] == 0, ledger.kinds
        assert set(ledger.kinds) <= {"served", "lost"}, ledger.kinds
        assert ledger.kinds["lost"] <= THREADS, ledger.kinds
        assert ledger.slowest() < HTTP_TIMEOUT + SWEEP + 0.5
        handled_by = handlers(p.stdout_path for p in workers.values())
        late = {o.ident: [by_pid.get(pid) for pid in handled_by.get(o.ident, [])]
                for o in ledger.outcomes if o.kind == "lost"}
        w2_during = served_by("w2", cut_at) - served_by("w2", restored_at)
        print(f"\n[netns: w1's link cut {restored_at - cut_at:.1f} s] during the cut: "
              f"{dict(kinds_during)} (w2 served {w2_during}); "
              f"w1 served again {back_after:.2f} s after its link came back; totals "
              f"{dict(ledger.kinds)}; lost (504) and who handled them: {late}; "
              f"of those lost in the layer: "
              f"{len(ledger.lost_in_layer())}, handled but the answer lost: "
              f"{len(ledger.answers_lost())}; duplicates: {len(ledger.duplicates)}; "
              f"Redis client sources {sorted(sources)}")
    except BaseException:
        print(stack.explain())  # every process's state and output, under the failure
        raise
    finally:
        stack.stop_all()
