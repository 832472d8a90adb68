"""End-to-end Redis faults beyond a plain restart: one shard of a sharded layer down, and a
Sentinel failover, each under load against real ``interfaceserver`` and ``runworker``
processes.

What must hold (DESIGN.md, "Failure model"): no request hangs or gets an empty reply,
nothing crashes, every process recovers by itself, nothing is delivered twice, and what a
fault costs is counted (``tests/e2e/faultload.py`` keeps the books, from the clients'
answers and from the workers' own tally of what they handled). Each test prints its
figures (run with ``-s`` to see them).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from websockets.sync.client import connect as ws_connect

from asgi_spec import load_layer
from asgi_spec.names import non_local_name
from asgi_spec.registry import KIND_INTERFACESERVER
from tests.e2e.clients import CLIENT_TIMEOUT
from tests.e2e.faultload import Ledger, TallyLoad, tallies, tcp
from tests.e2e.processes import InterfaceServer, Stack, wait_until
from tests.redis_server import RedisServer, RedisServerError, free_port

pytestmark = pytest.mark.slow

TALLY_ROUTING = "tests.e2e.tally_app:channel_routing"
#: The servers' --http-timeout: a request whose answer cannot come is 504 after it.
HTTP_TIMEOUT = 2.0
#: The server's sweep period: timeouts are decided at most this late.
SWEEP = 1.0
#: The shortest outage the sharded test holds (seconds).
MIN_OUTAGE = 3.0


def start_redis(server: RedisServer) -> RedisServer:
    try:
        return server.start()
    except RedisServerError as exc:
        server.cleanup()
        pytest.fail(f"cannot start redis-server: {exc}", pytrace=False)


@contextlib.contextmanager
def running_stack(url: str, tmp_path: Path) -> Iterator[Stack]:
    """A ``Stack`` on ``url``: every process stopped by PID at the end, and every
    process's output printed when the test failed."""
    layer = load_layer(url)
    stack = Stack(url, tmp_path, layer)
    try:
        yield stack
    except BaseException:
        print(stack.explain())
        raise
    finally:
        stack.stop_all()
        layer.close()


@contextlib.contextmanager
def loads(*clients: TallyLoad) -> Iterator[tuple[TallyLoad, ...]]:
    """Start the clients; stop and join them on the way out, whatever happened."""
    try:
        for client in clients:
            client.start()
        yield clients
    finally:
        for client in clients:
            client.stopping.set()
        for client in clients:
            client.join(CLIENT_TIMEOUT + 5)


def reply_prefix(stack: Stack, server: InterfaceServer) -> str:
    """The ``<server-id>!`` prefix ``server`` receives its replies on (from the registry)."""
    def found() -> str | None:
        for info in stack.layer.live_processes(KIND_INTERFACESERVER).values():
            if isinstance(info, dict) and info.get("pid") == server.pid:
                return str(info["reply_prefix"])
        return None

    return wait_until(found, f"{server.name} to register", explain=stack.explain)


def worker_stdouts(stack: Stack) -> list[Path]:
    return [p.stdout_path for p in stack.processes if not isinstance(p, InterfaceServer)]


# -- a sharded layer with one shard down -------------------------------------------------


@pytest.fixture
def two_shards() -> Iterator[tuple[RedisServer, RedisServer]]:
    """Two redis-servers of this test's own: one of them is stopped and restarted."""
    servers = (RedisServer(), RedisServer())
    try:
        for server in servers:
            start_redis(server)
        yield servers
    finally:
        for server in servers:
            server.cleanup()


def test_layer_with_one_shard_down_still_reads_the_other_promptly(
        two_shards: tuple[RedisServer, RedisServer]) -> None:
    """The layer alone, one of its two servers stopped: a blocking receive over channels
    on both servers still gets the live server's messages at once (but for the one that
    finds the dead server out), sync and async, and a batch receive returns what it took
    instead of failing (and losing it) on the dead server."""
    import asyncio

    url = ",".join(s.url for s in two_shards) + f"?prefix=e2e-ring-{uuid.uuid4().hex[:8]}:"
    layer = load_layer(url)
    try:
        ring = layer._ring
        names = {}
        for n in range(1000):
            names.setdefault(ring.index_of(f"sb.down{n}"), f"sb.down{n}")
        live, dead = names[0], names[1]
        two_shards[1].stop()
        waits = []
        for n in range(6):
            layer.send(live, {"n": n})
            began = time.monotonic()
            assert layer.receive([live, dead], block=True, timeout=5) == (live, {"n": n})
            waits.append(time.monotonic() - began)
        # One receive finds the dead server out (its connection retries); the rest skip it.
        assert sum(w >= 0.5 for w in waits) <= 1 and max(waits) < 3, waits

        async def async_waits() -> list[float]:
            found = []
            for n in range(6):
                await layer.send_async(live, {"n": n})
                began = time.monotonic()
                got = await layer.receive_async([live, dead], timeout=5)
                assert got == (live, {"n": n})
                found.append(time.monotonic() - began)
            return found

        awaits = asyncio.run(async_waits())
        assert sum(w >= 0.5 for w in awaits) <= 1 and max(awaits) < 3, awaits
        for n in range(3):
            layer.send(live, {"n": n})
        assert layer.receive_batch([live, dead], 10, block=True, timeout=5) == [
            (live, {"n": n}) for n in range(3)]
    finally:
        layer.close()


def test_one_shard_down_serves_what_lives_on_the_other(
        two_shards: tuple[RedisServer, RedisServer], tmp_path: Path) -> None:
    """A layer sharded over two Redis servers, one of which stops under load. Requests
    whose channels all live on the surviving shard (``http.request`` and the reply queue
    of their server, placed by the layer's hash ring) are still served, every one; those
    of a server whose reply queue lived on the stopped shard get 503 with a body (or, for
    the few sent before it noticed, 504 -- or their answer, when the shard is back before
    their timeout) -- never a hang, an empty reply or a crash. The
    shard restarted (empty), everything is served again without restarting anything; the
    workers' tally shows no request handled twice."""
    url = ",".join(s.url for s in two_shards) + f"?prefix=e2e-shard-{uuid.uuid4().hex[:8]}:"
    with running_stack(url, tmp_path) as stack:
        ring = stack.layer._ring  # where the layer puts each queue: as every process does
        up = ring.index_of("http.request")
        down = 1 - up
        # Four threads: a reply to the stopped shard holds one for its retries (about
        # 2 s); the two cut clients can hold two at most, two are left for the rest.
        worker = stack.worker("--threads", "4", routing=TALLY_ROUTING)
        # Two servers, one whose reply queue is on each shard: the ids are random, so
        # start servers until both kinds are there (each has an even chance).
        by_shard: dict[int, InterfaceServer] = {}
        for _ in range(12):
            server = stack.server("--http-timeout", str(HTTP_TIMEOUT))
            index = ring.index_of(non_local_name(reply_prefix(stack, server)))
            if index in by_shard:
                server.stop()
                continue
            by_shard[index] = server
            if len(by_shard) == 2:
                break
        assert len(by_shard) == 2, "12 servers all had their reply queue on one shard"
        intact, cut = by_shard[up], by_shard[down]
        placement = {name: ring.index_of(name) for name in
                     ("http.request", "http.disconnect", "websocket.connect", "worker",
                      KIND_INTERFACESERVER)}
        clients = [TallyLoad(f"intact{n}", tcp(intact.port)) for n in range(2)]
        clients += [TallyLoad(f"cut{n}", tcp(cut.port)) for n in range(2)]
        intact_clients, cut_clients = clients[:2], clients[2:]
        shard = two_shards[down]
        with loads(*clients):
            wait_until(lambda: all(c.count("served") >= 5 for c in clients),
                       "load to be served", explain=stack.explain)
            shard.stop()
            down_at = time.monotonic()
            wait_until(lambda: time.monotonic() - down_at >= MIN_OUTAGE
                       and all(c.count("refused", down_at) >= 5 for c in cut_clients)
                       and all(c.count("served", down_at) >= 20 for c in intact_clients),
                       "refusals on the cut server and service on the intact one",
                       timeout=15, interval=0.1, explain=stack.explain)
            shard.start()
            up_at = time.monotonic()
            wait_until(lambda: all(c.count("served", up_at) >= 10 for c in clients),
                       "every client to be served again after the shard came back",
                       timeout=20, explain=stack.explain)
        assert worker.running and intact.running and cut.running, stack.explain()
        ledger = Ledger(clients, tallies(worker_stdouts(stack)))
        ledger.check_clean()
        intact_during = Ledger(intact_clients, ledger.handled).between(down_at, up_at)
        cut_during = Ledger(cut_clients, ledger.handled).between(down_at, up_at)
        assert set(intact_during) == {"served"}, intact_during
        assert set(cut_during) <= {"refused", "lost", "served"}, cut_during
        # Only requests sent before the cut server noticed (its next sweep, plus one
        # probe of its reply queue) can be lost -- or served, if the worker's retried
        # reply gets through once the shard is back: one or two per client.
        assert cut_during["lost"] + cut_during["served"] <= 2 * len(cut_clients), cut_during
        assert ledger.slowest() < HTTP_TIMEOUT + SWEEP + 0.5
        first_refusal = min(o.ended for c in cut_clients for o in c.outcomes
                            if o.kind == "refused")
        recovered = ledger.recovered_after(up_at)
        assert recovered is not None
        print(f"\n[sharded, one of 2 shards down {up_at - down_at:.1f} s] placement "
              f"{placement}, reply queues: intact server on shard {up}, cut server on "
              f"shard {down}; intact server during the outage: {dict(intact_during)}; "
              f"cut server: {dict(cut_during)}, first 503 {first_refusal - down_at:.2f} s "
              f"after the stop; all served again {recovered:.2f} s after the restart; "
              f"totals {dict(ledger.kinds)}; lost in the layer: {len(ledger.lost_in_layer())}, "
              f"answers lost: {len(ledger.answers_lost())}, refused but handled: "
              f"{len(ledger.refused_but_handled())}, duplicates: {len(ledger.duplicates)}; "
              f"slowest answer {ledger.slowest():.2f} s")


# -- Sentinel failover -----------------------------------------------------------------

SERVICE = "sbfailover"


def _client(port: int) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=2, decode_responses=True)


class SentinelCluster:
    """A master, its replica and three Sentinels (quorum 2) watching them, set to fail
    over fast: the master is down after 500 ms without an answer."""

    def __init__(self, directory: Path) -> None:
        self.master = RedisServer()
        self.replica = RedisServer(extra_args=("--replicaof", "127.0.0.1",
                                               str(self.master.port)))
        self.sentinels: list[RedisServer] = []
        for n in range(3):
            port = free_port()
            conf = directory / f"sentinel-{n}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {directory}\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {self.master.port} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} 500\n"
                f"sentinel failover-timeout {SERVICE} 3000\n"
                f"sentinel parallel-syncs {SERVICE} 1\n")
            self.sentinels.append(RedisServer(port=port, sentinel_config=conf))

    @property
    def servers(self) -> list[RedisServer]:
        return [self.master, self.replica, *self.sentinels]

    def url(self, prefix: str) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{SERVICE}/0?prefix={prefix}"

    def start(self) -> None:
        start_redis(self.master)
        start_redis(self.replica)
        def synced() -> bool:
            with _client(self.replica.port) as client:
                return client.info("replication").get("master_link_status") == "up"

        wait_until(synced, "the replica to sync with the master")
        for sentinel in self.sentinels:
            start_redis(sentinel)
        wait_until(self.watching, "every Sentinel to know the replica and the other two",
                   timeout=20, interval=0.1)

    def watching(self) -> bool:
        for sentinel in self.sentinels:
            with _client(sentinel.port) as client:
                if len(client.execute_command("SENTINEL", "SENTINELS", SERVICE)) != 2:
                    return False
                if len(client.execute_command("SENTINEL", "REPLICAS", SERVICE)) != 1:
                    return False
        return True

    def master_port(self) -> int | None:
        """The master's port as the Sentinels agree on it (None while they differ)."""
        ports = set()
        for sentinel in self.sentinels:
            with _client(sentinel.port) as client:
                ports.add(int(client.execute_command(
                    "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)[1]))
        return ports.pop() if len(ports) == 1 else None

    def kill_master(self) -> None:
        """SIGKILL the master by its PID (no goodbye to anyone) and reap it."""
        process = self.master.process
        assert process is not None
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)

    def cleanup(self) -> None:
        for server in reversed(self.servers):
            server.cleanup()


@pytest.fixture
def sentinel_cluster(tmp_path: Path) -> Iterator[SentinelCluster]:
    directory = tmp_path / "sentinel"
    directory.mkdir()
    cluster = SentinelCluster(directory)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.cleanup()


def test_sentinel_failover_under_load_recovers_by_itself(
        sentinel_cluster: SentinelCluster, tmp_path: Path) -> None:
    """The master behind a ``redis+sentinel://`` layer is SIGKILLed under HTTP load (and
    with a WebSocket open): the Sentinels promote the replica, and the server and the
    worker find the new master by themselves -- no restart. Meanwhile every request gets
    a correct answer (200, 503 with a body, or 504 for one in flight), never a hang or a
    reset; the open WebSocket either keeps echoing or is closed with 1013; service is
    back within a bounded time, and no request is handled twice."""
    cluster = sentinel_cluster
    url = cluster.url(f"e2e-sentinel-{uuid.uuid4().hex[:8]}:")
    with running_stack(url, tmp_path) as stack:
        server = stack.server("--http-timeout", str(HTTP_TIMEOUT))
        worker = stack.worker("--threads", "2", routing=TALLY_ROUTING)
        clients = [TallyLoad(f"c{n}", tcp(server.port)) for n in range(3)]
        with loads(*clients), ws_connect(server.ws_url("/ws/echo/"),
                                         open_timeout=CLIENT_TIMEOUT) as ws:
            ws.send("before")
            assert ws.recv(timeout=CLIENT_TIMEOUT) == "before"
            wait_until(lambda: all(c.count("served") >= 10 for c in clients),
                       "load to be served", explain=stack.explain)
            cluster.kill_master()
            killed_at = time.monotonic()
            ws_outcome = _websocket_during(ws)
            wait_until(lambda: cluster.master_port() == cluster.replica.port,
                       "the Sentinels to promote the replica", timeout=20, interval=0.05)
            promoted = time.monotonic() - killed_at
            wait_until(lambda: all(c.count("served", killed_at + promoted) >= 20
                                   for c in clients),
                       "load to be served by the new master", timeout=20,
                       explain=stack.explain)
        with ws_connect(server.ws_url("/ws/echo/"), open_timeout=CLIENT_TIMEOUT) as fresh:
            fresh.send("after")
            assert fresh.recv(timeout=CLIENT_TIMEOUT) == "after"
        assert server.running and worker.running, stack.explain()
        ledger = Ledger(clients, tallies(worker_stdouts(stack)))
        ledger.check_clean()
        recovered = ledger.recovered_after(killed_at)
        assert recovered is not None and recovered < 15, recovered
        window = ledger.between(killed_at, killed_at + recovered)
        assert ledger.slowest() < HTTP_TIMEOUT + SWEEP + 0.5
        assert ledger.kinds["lost"] <= len(clients) + 2, ledger.kinds
        print(f"\n[Sentinel failover] replica promoted {promoted:.2f} s after the master was "
              f"killed; all served again {recovered:.2f} s after the kill; during that "
              f"window: {dict(window)}; totals {dict(ledger.kinds)}; lost in the layer: "
              f"{len(ledger.lost_in_layer())}, answers lost: {len(ledger.answers_lost())}, "
              f"refused but handled: {len(ledger.refused_but_handled())}, duplicates: "
              f"{len(ledger.duplicates)}; the open WebSocket: {ws_outcome}; slowest answer "
              f"{ledger.slowest():.2f} s")


def _websocket_during(ws: Any) -> str:
    """Send on a WebSocket opened before the fault: it echoes, or closes with 1013."""
    from websockets.exceptions import ConnectionClosed

    try:
        ws.send("during")
        echoed = ws.recv(timeout=CLIENT_TIMEOUT)
    except ConnectionClosed as closed:
        code = closed.rcvd.code if closed.rcvd is not None else None
        assert code == 1013, f"the WebSocket was closed with {code}, not 1013"
        return "closed with 1013"
    assert echoed == "during"
    return "kept echoing"
