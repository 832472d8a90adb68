"""The heartbeat guarantee, decided on fake clocks: a worker that stops beating is shown
stale by every reader -- the registry helpers, ``switchboard status``, the interface
server's 503 decision, readiness, ``/metrics`` and the dashboard feed -- within one
heartbeat interval, and a live worker whose beats come late under load is never flagged.

The interface server runs on ``MemoryReactorClock`` with ``ImmediateLayerIO``; the layer
on ``FakeClock``. ``Deployment.advance`` moves both together, so the server's timers (its
own heartbeat, the worker-view refresh, the ops sampler) fire as they would in real time.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from twisted.internet.defer import ensureDeferred
from twisted.internet.testing import MemoryReactorClock

from asgi_spec import registry
from asgi_spec.layers.memory import MemoryChannelLayer
from asgi_spec.ops import diagnose, snapshot, status_dict
from asgi_spec.testing import FakeClock
from interface_server.config import ServerConfig
from interface_server.layer_io import ImmediateLayerIO
from interface_server.server import Server
from worker.routing import route
from worker.worker import Worker

INTERVAL = 5.0
STEP = 0.05


def _answer(message: Any) -> None:
    message.reply_channel.send({"status": 200, "content": b"ok"})


def _metric(text: bytes, name: str, **labels: str) -> float | None:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.decode().splitlines():
        match = re.fullmatch(r"([a-z_]+)(?:\{(.*)\})? (\S+)", line)
        if match and match.group(1) == name and (match.group(2) or "") == wanted:
            return float(match.group(3))
    return None


def _fired(deferred: Any) -> Any:
    box: list[Any] = []
    deferred.addBoth(box.append)
    assert box, "the Deferred did not fire (ImmediateLayerIO should make it synchronous)"
    return box[0]


class Deployment:
    """One interface server (metrics, health, dashboard) and one worker, on fake clocks."""

    def __init__(self, interval: float = INTERVAL) -> None:
        self.layer_clock = FakeClock()
        self.layer = MemoryChannelLayer(clock=self.layer_clock)
        self.reactor = MemoryReactorClock()
        self.server = Server(self.layer, reactor=self.reactor, server_id="srv",
                             layer_io=ImmediateLayerIO(self.layer, clock=self.reactor),
                             config=ServerConfig(metrics=True, health=True, dashboard=True,
                                                 heartbeat_interval=interval))
        self.worker = Worker(self.layer, [route("http.request", _answer)], name="w1",
                             heartbeat_interval=interval)
        self.beat()  # the worker runs before the server starts
        self.server.start_timers()
        self.elapsed = 0.0

    def advance(self, seconds: float) -> None:
        self.layer_clock.advance(seconds)
        self.reactor.advance(seconds)
        self.elapsed += seconds

    def beat(self) -> None:
        assert self.worker.heartbeat()

    def readers(self) -> dict[str, bool]:
        """Whether each reader counts w1 as a live worker right now."""
        now = self.layer_clock()
        look = snapshot(self.layer)
        status = status_dict(look, diagnose(look, now), now)
        (seen,) = [w for w in status["workers"] if w["name"] == "w1"]
        ops = self.server.ops
        assert ops is not None and ops.metrics is not None
        _fired(ops.fresh())
        metrics = ops.metrics.render()
        feed = ops.feed()["status"]
        (fed,) = [w for w in feed["workers"] if w["name"] == "w1"]
        return {
            "registry": "w1" in registry.live_consumers(self.layer, "http.request"),
            "status": not seen["stale"] and "w1" in look.channel("http.request").consumers,
            "status problems": not any(p["code"] in ("no-workers", "stale-heartbeat")
                                       for p in status["problems"]),
            "503 decision": _fired(self.server.consumer_available("http.request")) is True,
            "readiness": _fired(ensureDeferred(ops.readiness()))["ready"],
            "metrics": _metric(metrics, "switchboard_worker_up", worker="w1") == 1
            and _metric(metrics, "switchboard_workers", state="stale") == 0,
            "dashboard feed": not fed["stale"] and fed["state"] != "stale",
        }


def test_a_stopped_worker_is_stale_everywhere_within_one_interval_never_before_two_beats():
    """After beats that come up to 1.95 s apart (a loaded worker missing a beat: the beat
    period is 1 s for a 5 s interval) every reader counts the worker live at every 50 ms
    step. Then it stops beating right after a beat (the worst moment to be SIGKILLed):
    every reader flags it after 3 s (0.6 intervals) at the earliest and 5 s (one interval)
    at the latest -- the server's cached registry view and metrics look included."""
    deployment = Deployment()
    for gap in (1.0, 1.0, 1.95, 0.2, 1.95, 1.0, 1.5):
        for _ in range(round(gap / STEP)):
            deployment.advance(STEP)
            assert all(deployment.readers().values()), deployment.readers()
        deployment.beat()
    killed = deployment.elapsed
    flagged: dict[str, float] = {}
    while len(flagged) < 7 and deployment.elapsed - killed < 2 * INTERVAL:
        deployment.advance(STEP)
        for reader, live in deployment.readers().items():
            if not live:
                flagged.setdefault(reader, deployment.elapsed - killed)
            else:
                assert reader not in flagged, f"{reader} counted the dead worker live again"
    assert len(flagged) == 7, flagged
    for reader, after in flagged.items():
        assert 2 * registry.beat_period(INTERVAL) < after <= INTERVAL, (reader, after)
    # Status judges at the moment it looks: exactly past 0.6 intervals.
    assert flagged["status"] == pytest.approx(registry.STALE_AFTER * INTERVAL + STEP)


@pytest.mark.parametrize("interval", [1.0, 2.0, 30.0])
def test_the_guarantee_scales_with_the_interval(interval):
    """The budget is in shares of the interval: with a 1 s, 2 s or 30 s interval the
    server's 503 decision and its metrics flag a worker that stopped after a beat within
    one interval, and not while it beats every period."""
    deployment = Deployment(interval)
    period = registry.beat_period(interval)
    step = interval / 100
    for _ in range(10):
        for _ in range(round(period / step)):
            deployment.advance(step)
        deployment.beat()
        readers = deployment.readers()
        assert readers["503 decision"] and readers["metrics"], readers
    killed = deployment.elapsed
    while deployment.readers()["503 decision"] or deployment.readers()["metrics"]:
        deployment.advance(step)
        assert deployment.elapsed - killed <= interval, "not flagged within one interval"


def test_cache_limits_follow_the_heartbeat_interval():
    """The server re-reads the worker registry, and answers scrapes from a look, at most a
    fifth of the heartbeat interval old (never more than the configured refresh and ops
    intervals); it beats five times per interval and registers for three intervals."""
    deployment = Deployment(2.0)
    assert deployment.server.workers.refresh_interval == pytest.approx(0.4)
    assert deployment.server.ops is not None
    assert deployment.server.ops.max_age == pytest.approx(0.4)
    assert registry.beat_period(2.0) == pytest.approx(0.4)
    assert registry.registration_ttl(2.0) == pytest.approx(6.0)
    relaxed = Deployment(60.0)
    assert relaxed.server.workers.refresh_interval == 1.0  # worker_refresh_interval
    assert relaxed.server.ops is not None and relaxed.server.ops.max_age == 2.0  # ops_interval


def test_scrapes_reuse_a_recent_look_and_take_a_new_one_when_it_is_old():
    """A scrape within max_age of the last look reads no statistics; a later one takes a
    new look first (not recorded as a chart sample)."""
    deployment = Deployment()
    ops = deployment.server.ops
    assert ops is not None
    looks: list[str] = []
    real = deployment.layer.channel_statistics
    deployment.layer.channel_statistics = lambda name: looks.append(name) or real(name)
    samples = len(ops.history)
    _fired(ops.fresh())
    assert looks == []
    deployment.reactor.advance(ops.max_age)
    _fired(ops.fresh())
    assert looks and len(ops.history) == samples


@pytest.mark.parametrize(("info", "stale"), [
    ({"heartbeat_at": 100.0, "heartbeat_interval": 5.0}, False),
    ({"heartbeat_at": 96.9, "heartbeat_interval": 5.0}, True),
    ({"heartbeat_at": 99.5, "heartbeat_interval": 1.0}, False),
    ({"heartbeat_at": 99.3, "heartbeat_interval": 1.0}, True),
    ({"heartbeat_at": 97.1}, False),  # no interval published: the default 5 s
    ({"heartbeat_at": 96.9, "heartbeat_interval": "x"}, True),
    ({"channels": ["http.request"]}, False),  # an older process: no times, never stale
    (None, False),
])
def test_is_stale_reads_each_process_by_its_own_interval(info, stale):
    """is_stale compares the heartbeat's age with 0.6 of the interval the process published
    (the default when it published none) and treats missing times as not stale."""
    assert registry.is_stale(info, 100.0) is stale


def test_runworker_and_interfaceserver_take_a_heartbeat_interval(monkeypatch, tmp_path):
    """``--heartbeat-interval`` reaches the Worker (and, with --processes, every child's
    command line, under a supervisor that unregisters dead children) and the interface
    server's config."""
    from click.testing import CliRunner

    from interface_server import cli as server_cli
    from worker import cli as worker_cli

    seen: list[Any] = []
    monkeypatch.setattr(worker_cli.Worker, "run",
                        lambda self, install_signals=True: seen.append(self) or 0)
    monkeypatch.setattr(worker_cli.Supervisor, "run",
                        lambda self, install_signals=True: seen.append(self) or 0)
    layer = f"sqlite:///{tmp_path}/layer.db"
    args = ["tests.ops.app:channel_routing", "--layer", layer, "--heartbeat-interval", "2"]
    result = CliRunner().invoke(worker_cli.runworker, args)
    assert result.exit_code == 0, result.output
    assert seen[-1].heartbeat_interval == 2.0 and seen[-1].heartbeat_ttl == 6.0
    result = CliRunner().invoke(worker_cli.runworker, [*args, "--processes", "2"])
    assert result.exit_code == 0, result.output
    supervisor = seen[-1]
    assert supervisor.on_exit is not None
    for slot in supervisor.slots:
        assert slot.command[slot.command.index("--heartbeat-interval") + 1] == "2.0"
    monkeypatch.setattr(server_cli, "run", lambda settings: seen.append(settings) or 0)
    result = CliRunner().invoke(server_cli.main, ["--heartbeat-interval", "2"])
    assert result.exit_code == 0, result.output
    assert seen[-1].config.heartbeat_interval == 2.0
