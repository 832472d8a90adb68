"""The operations endpoints of the interface server: /metrics, /-/health, /-/ready and the
dashboard feed, on the harness (memory reactor, memory layer, immediate layer calls)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from click.testing import CliRunner

from asgi_spec.exceptions import LayerUnavailable
from interface_server import cli
from interface_server.config import ServerConfig
from interface_server.metrics import LatencyWindow, channel_label
from tests.interface_server.conftest import client_frame, handshake

ALL = {"metrics": True, "health": True, "dashboard": True}


def get(h: Any, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    """One request on a fresh connection: ``(status, headers, body)``."""
    connection = h.connect()
    connection.send(f"{method} {path} HTTP/1.1\r\nHost: h\r\n\r\n".encode())
    raw = connection.take()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value for name, value in
               (line.split(": ", 1) for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def metric(text: bytes, name: str, **labels: str) -> float | None:
    """The value of one sample in the Prometheus text ``text`` (None if absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.decode().splitlines():
        match = re.fullmatch(r"([a-z_]+)(?:\{(.*)\})? (\S+)", line)
        if match and match.group(1) == name:
            got = ",".join(sorted((match.group(2) or "").split(","))) if match.group(2) else ""
            if got == wanted:
                return float(match.group(3))
    return None


def answer(h: Any, status: int = 200) -> None:
    """The worker's part: answer the waiting http.request."""
    request = h.receive("http.request")
    h.reply({"status": status, "content": b"ok"}, request["reply_channel"])


def test_off_by_default_the_paths_belong_to_the_application(harness: Any) -> None:
    """Without options no operations object exists and /metrics reaches the application."""
    h = harness()
    assert h.server.ops is None and h.server.metrics is None
    connection = h.connect()
    connection.send(b"GET /metrics HTTP/1.1\r\nHost: h\r\n\r\n")
    assert h.receive("http.request")["path"] == "/metrics"


def test_metrics_count_requests_by_status_and_time_to_first_reply(harness: Any) -> None:
    """/metrics answers itself (nothing reaches the layer) with requests by status, the
    first-reply time as measured on the reactor clock, and open connections."""
    h = harness(config=ServerConfig(metrics=True))
    connection = h.connect()
    connection.send(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n")
    h.reactor.advance(0.3)
    answer(h)
    connection.send(b"GET /b HTTP/1.1\r\nHost: h\r\n\r\n")
    answer(h, 404)
    status, headers, body = get(h, "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    assert h.nothing_on("http.request")
    assert metric(body, "switchboard_http_requests_total", status="200") == 1
    assert metric(body, "switchboard_http_requests_total", status="404") == 1
    assert metric(body, "switchboard_http_first_reply_seconds_count") == 2
    assert metric(body, "switchboard_http_first_reply_seconds_bucket", le="0.25") == 1
    assert metric(body, "switchboard_http_first_reply_seconds_bucket", le="0.5") == 2
    assert metric(body, "switchboard_http_connections") == 2  # this one and the scrape
    assert metric(body, "switchboard_layer_messages_sent_total", channel="http.request") == 2


def test_metrics_show_the_deployment_from_the_layer(harness: Any) -> None:
    """After a look at the layer: channel depth and capacity, workers by state, consumer
    time per worker and channel, live servers, problems -- as switchboard status has them."""
    h = harness(config=ServerConfig(metrics=True), capacity=10)
    h.layer.register_process("worker", "w2", {
        "channels": ["jobs"], "busy": 1, "threads": 1, "processed": 4, "failed": 1,
        "by_channel": {"jobs": [4, 2.0, 1]}}, ttl=3600)
    for n in range(9):
        h.layer.send("jobs", {"n": n})
    h.server.ops.sample()
    _, _, body = get(h, "/metrics")
    assert metric(body, "switchboard_channel_pending", channel="jobs") == 9
    assert metric(body, "switchboard_channel_capacity", channel="jobs") == 10
    assert metric(body, "switchboard_channel_messages_total", channel="jobs") == 9
    assert metric(body, "switchboard_workers", state="busy") == 1
    assert metric(body, "switchboard_workers", state="idle") == 0
    assert metric(body, "switchboard_consumer_seconds_total", worker="w2", channel="jobs") == 2.0
    assert metric(body, "switchboard_worker_failed_total", worker="w2") == 1
    assert metric(body, "switchboard_interfaceservers") == 1
    assert metric(body, "switchboard_problems", severity="error") == 1  # jobs 90 % full
    assert metric(body, "switchboard_layer_up") == 1


def test_metrics_before_any_look_say_the_layer_is_unknown(harness: Any) -> None:
    """A failed look at the layer sets layer_up to 0 and counts a snapshot error."""
    h = harness(config=ServerConfig(metrics=True))
    h.server.ops.look = type(h.server.ops.look)(None, None, None, h.layer.clock)
    _, _, body = get(h, "/metrics")
    assert metric(body, "switchboard_layer_up") == 0
    h.layer.channel_statistics = _unavailable
    h.server.ops.sample()
    _, _, body = get(h, "/metrics")
    assert metric(body, "switchboard_layer_errors_total", operation="snapshot",
                  error="LayerUnavailable") == 1


def _unavailable(*args: Any) -> Any:
    raise LayerUnavailable("redis down")


def test_layer_errors_and_websocket_messages_are_counted(harness: Any) -> None:
    """A refused send counts as a layer error by kind; WebSocket frames in and out count."""
    h = harness(config=ServerConfig(metrics=True), capacity=1)
    h.layer.send("http.request", {"fill": True})
    connection = h.connect()
    connection.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    assert b" 503 " in connection.take()
    socket = h.connect()
    socket.send(handshake())
    connect = h.receive("websocket.connect")
    h.reply({"accept": True}, connect["reply_channel"])
    socket.send(client_frame(1, b"hello"))
    h.receive("websocket.receive")
    h.reply({"text": "one"}, connect["reply_channel"])
    h.reply({"text": "two"}, connect["reply_channel"])
    _, _, body = get(h, "/metrics")
    assert metric(body, "switchboard_layer_errors_total", operation="send",
                  error="ChannelFull") == 1
    assert metric(body, "switchboard_websocket_messages_total", direction="in") == 1
    assert metric(body, "switchboard_websocket_messages_total", direction="out") == 2
    assert metric(body, "switchboard_websocket_handshakes_total", status="101") == 1
    assert metric(body, "switchboard_websocket_accept_seconds_count") == 1
    assert metric(body, "switchboard_server_events_total", event="channel_full") == 1


def test_health_is_always_alive(harness: Any) -> None:
    """/-/health answers 200 with JSON, whatever the workers and the layer do."""
    h = harness(config=ServerConfig(health=True), workers=None)
    status, headers, body = get(h, "/-/health")
    assert status == 200 and headers["content-type"] == "application/json"
    assert json.loads(body)["status"] == "ok"


def test_ready_checks_the_layer_round_trip_and_a_worker(harness: Any) -> None:
    """/-/ready is 200 with a round trip and a worker for http.request; 503 and why when
    no worker consumes it, when the layer fails, and while draining."""
    h = harness(config=ServerConfig(health=True))
    status, _, body = get(h, "/-/ready")
    found = json.loads(body)
    assert status == 200 and found["ready"] is True
    assert found["layer"]["ok"] is True and found["worker"]["ok"] is True
    assert h.layer.global_statistics()["messages_pending"] == 0  # the ping was taken back
    h.layer.unregister_process("worker", "w1")
    h.advance(2)  # the worker view refreshes
    status, _, body = get(h, "/-/ready")
    assert status == 503
    assert json.loads(body)["worker"]["detail"] == "no live worker consumes it"


def test_ready_fails_when_the_layer_does(harness: Any, monkeypatch: pytest.MonkeyPatch
                                         ) -> None:
    """A send that fails makes readiness 503, naming the error."""
    h = harness(config=ServerConfig(health=True))
    monkeypatch.setattr(h.layer, "send", _unavailable)
    status, _, body = get(h, "/-/ready")
    found = json.loads(body)
    assert status == 503 and found["layer"] == {"ok": False, "seconds": 0.0,
                                                 "error": "LayerUnavailable: redis down"}


def test_not_ready_while_draining(harness: Any) -> None:
    """A draining server is alive but not ready (a load balancer stops sending to it)."""
    h = harness(config=ServerConfig(health=True))
    h.server.draining = True
    assert get(h, "/-/ready")[0] == 503
    assert get(h, "/-/health")[0] == 200


def test_paths_are_configurable_and_only_get_is_served(harness: Any) -> None:
    """Custom paths are served instead of the defaults; POST gets 405; other paths go on to
    the application."""
    h = harness(config=ServerConfig(metrics=True, metrics_path="/internal/metrics",
                                    health=True, health_path="/healthz", ready_path="/readyz"))
    assert get(h, "/internal/metrics")[0] == 200
    assert get(h, "/healthz")[0] == 200 and get(h, "/readyz")[0] == 200
    status, headers, _ = get(h, "/healthz", "POST")
    assert status == 405 and headers["allow"] == "GET, HEAD"
    connection = h.connect()
    connection.send(b"GET /-/health HTTP/1.1\r\nHost: h\r\n\r\n")
    assert h.receive("http.request")["path"] == "/-/health"


def test_ops_port_only_keeps_the_app_ports_for_the_application(harness: Any) -> None:
    """With ops_on_app_ports off (--ops-port) the app's ports pass every path through."""
    h = harness(config=ServerConfig(metrics=True, ops_on_app_ports=False))
    connection = h.connect()
    connection.send(b"GET /metrics HTTP/1.1\r\nHost: h\r\n\r\n")
    assert h.receive("http.request")["path"] == "/metrics"


def test_dashboard_page_and_feed(harness: Any) -> None:
    """The page is self-contained HTML pointing at its feed; the feed has the history of
    samples (depths, rates, first-reply percentiles) and the status of the latest look."""
    h = harness(config=ServerConfig(dashboard=True))
    status, headers, page = get(h, "/-/dashboard")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert b'const FEED = "/-/dashboard.json"' in page
    assert b"http://" not in page.replace(b"http://www.w3.org/2000/svg", b"")
    assert b"https://" not in page
    connection = h.connect()
    for n in range(3):
        connection.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        h.reactor.advance(0.01 * (n + 1))
        answer(h)
    h.layer_clock.advance(2)
    h.reactor.advance(2)  # the sampler's next look
    feed = json.loads(get(h, "/-/dashboard.json")[2])
    assert len(feed["history"]) == 2
    last = feed["history"][-1]
    assert last["rate"]["http.request"] == pytest.approx(1.5)
    assert last["replies_measured"] == 3
    assert last["first_reply_ms"]["p50"] == pytest.approx(20)
    assert last["workers"] == {"busy": 0, "idle": 1}
    assert feed["status"]["workers"][0]["name"] == "w1"
    assert feed["server"]["requests_total"] == 3


def test_config_refuses_bad_paths() -> None:
    """Operations paths must be URL paths and must differ."""
    with pytest.raises(ValueError, match="metrics_path"):
        ServerConfig(metrics_path="metrics")
    with pytest.raises(ValueError, match="must differ"):
        ServerConfig(health_path="/x", ready_path="/x")


def test_cli_options(monkeypatch: pytest.MonkeyPatch) -> None:
    """The --metrics/--health/--dashboard options and paths reach the config; --ops-port
    alone is a usage error and with an endpoint keeps the app's ports for the app."""
    seen: list[Any] = []
    monkeypatch.setattr(cli, "run", lambda settings: seen.append(settings) or 0)
    result = CliRunner().invoke(cli.main, ["--metrics", "--health", "--dashboard",
                                           "--metrics-path", "/m", "--ops-port", "9100"])
    assert result.exit_code == 0, result.output
    config = seen[0].config
    assert (config.metrics, config.health, config.dashboard, config.metrics_path) == \
        (True, True, True, "/m")
    assert config.ops_on_app_ports is False and seen[0].ops_port == 9100
    result = CliRunner().invoke(cli.main, ["--ops-port", "9100"])
    assert result.exit_code == 2 and "enable at least one" in result.output


def test_latency_window_and_channel_labels() -> None:
    """Percentiles of a window, then an empty window; single-reader names cut to patterns."""
    window = LatencyWindow()
    for value in (0.3, 0.1, 0.2, 0.4):
        window.add(value)
    assert window.take() == {"count": 4, "p50": 0.3, "p95": 0.4, "max": 0.4}
    assert window.take()["count"] == 0
    assert channel_label("http.request.body?abc") == "http.request.body?"
    assert channel_label("http.request") == "http.request"
