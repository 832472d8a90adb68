"""Tests for ``worker.worker``: the run_once unit, errors, retries, registry and run()."""

from __future__ import annotations

import logging
import threading

import pytest

from asgi_spec.exceptions import LayerUnavailable
from asgi_spec.registry import KIND_WORKER, live_consumers
from tests.worker.helpers import (
    SleepRecorder,
    drain,
    http_request,
    memory_layer,
    ws_connect,
    ws_disconnect,
    ws_receive,
)
from worker.channels import Channel, Group
from worker.exceptions import ConsumeLater, DenyConnection
from worker.routing import route
from worker.worker import Worker, _error_response, select_channels


def hello(message, **kwargs):
    message.reply_channel.send({"status": 200, "content": f"hi {kwargs}".encode()})


def make_worker(routing, layer=None, **options):
    """A worker taking one message per receive (most tests patch ``layer.receive``)."""
    layer = layer or memory_layer()
    options.setdefault("sleep", SleepRecorder())
    options.setdefault("batch_size", 1)
    return Worker(layer, routing, **options)


def test_run_once_routes_runs_and_flushes_the_reply():
    """run_once receives one message, passes filter kwargs, and flushes the consumer's reply."""
    worker = make_worker([route("http.request", hello, path=r"^/(?P<name>\w+)/$")])
    worker.layer.send("http.request", http_request("/bob/"))
    assert worker.run_once(block=False) is True
    assert drain(worker.layer, "srv!") == [{"status": 200, "content": b"hi {'name': 'bob'}"}]
    assert worker.processed == 1


def test_run_once_without_a_message_returns_false():
    """run_once returns False when nothing is waiting."""
    assert make_worker([route("http.request", hello)]).run_once(block=False) is False


def test_consumer_error_is_logged_once_sends_dropped_and_worker_goes_on(caplog):
    """A raising consumer logs one record with its traceback; its held sends are dropped."""
    def broken(message):
        Channel("side").send({"x": 1})
        raise RuntimeError("boom")

    worker = make_worker([route("custom", broken), route("http.request", hello)])
    worker.layer.send("custom", {"path": "/p"})
    worker.layer.send("http.request", http_request())
    with caplog.at_level(logging.ERROR, logger="worker"):
        assert worker.run_once(block=False)
        assert worker.run_once(block=False)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "broken" in errors[0].getMessage() and "'custom'" in errors[0].getMessage()
    assert errors[0].exc_info[0] is RuntimeError
    assert drain(worker.layer, "side") == []
    assert len(drain(worker.layer, "srv!")) == 1


def test_bad_reply_is_logged_naming_the_field(caplog):
    """A reply that breaks the HTTP format is a consumer error naming the field; the
    bad reply is not sent, the client gets a 500."""
    def bad(message):
        message.reply_channel.send({"status": 200, "headers": [[b"ok", "not bytes"]]})

    worker = make_worker([route("http.request", bad)])
    worker.layer.send("http.request", http_request())
    with caplog.at_level(logging.ERROR, logger="worker"):
        worker.run_once(block=False)
    assert "http.response field 'headers'" in caplog.text
    assert [reply["status"] for reply in drain(worker.layer, "srv!")] == [500]


def test_no_route_is_logged(caplog):
    """A message no route matches is logged with its channel and path."""
    worker = make_worker([route("http.request", hello, path=r"^/only/$")])
    worker.layer.send("http.request", http_request("/else/"))
    with caplog.at_level(logging.WARNING, logger="worker"):
        assert worker.run_once(block=False)
    assert "no route matched a message on 'http.request'" in caplog.text
    assert "/else/" in caplog.text


def test_consume_later_requeues_with_a_bounded_retry_count(caplog):
    """ConsumeLater requeues with __retries__ + 1, and gives up with a log after max_retries."""
    seen = []

    def later(message):
        seen.append(message.retries)
        Channel("side").send({})
        raise ConsumeLater()

    worker = make_worker([route("jobs", later)], max_retries=3)
    worker.layer.send("jobs", {"n": 1})
    with caplog.at_level(logging.ERROR, logger="worker"):
        while worker.run_once(block=False):
            pass
    assert seen == [0, 1, 2, 3]
    assert "gave up on a message on 'jobs'" in caplog.text
    assert drain(worker.layer, "side") == []


def test_layer_errors_back_off_exponentially_and_recover(caplog):
    """Layer errors are logged loudly, followed by growing capped sleeps; success resets."""
    layer = memory_layer()
    real_receive = layer.receive
    failures = [LayerUnavailable("redis down")] * 8

    def receive(channels, block=False):
        if failures:
            raise failures.pop()
        return real_receive(channels, block=block)

    layer.receive = receive
    sleep = SleepRecorder()
    worker = make_worker([route("jobs", hello)], layer=layer, sleep=sleep)
    with caplog.at_level(logging.WARNING, logger="worker"):
        for _ in range(8):
            assert worker.run_once(block=False) is False
        assert worker.run_once(block=False) is False  # layer back, queue empty
    assert sleep.delays == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    assert caplog.text.count("channel layer unavailable (LayerUnavailable: redis down)") == 8
    assert "reachable again" in caplog.text
    failures.append(LayerUnavailable("again"))
    worker.run_once(block=False)
    assert sleep.delays[-1] == 0.1


def test_channel_full_reply_is_retried_then_logged_not_raised(caplog):
    """A reply to a full channel is retried for ~2 s (fake sleep), then logged; no crash."""
    layer = memory_layer(capacity=1, process_capacity=1)
    layer.send("srv!other", {})
    sleep = SleepRecorder()
    worker = make_worker([route("http.request", hello)], layer=layer, sleep=sleep)
    layer.send("http.request", http_request())
    with caplog.at_level(logging.ERROR):
        assert worker.run_once(block=False)
    assert sleep.total == pytest.approx(2.0)
    assert "dropped a message to 'srv!conn1'" in caplog.text


@pytest.mark.parametrize(("debug", "channel", "message", "expected"), [
    (True, "websocket.receive", ws_receive(text="x"), [{"close": 1011}]),
    (True, "websocket.connect", ws_connect(), [{"close": 1011}]),
    (False, "websocket.receive", ws_receive(text="x"), []),
    (True, "websocket.disconnect", ws_disconnect(), []),
])
def test_debug_mode_closes_websocket_with_1011_on_error(debug, channel, message, expected):
    """In debug mode a consumer error on websocket.connect/receive closes it with 1011."""
    def broken(message):
        raise ValueError("bad")

    worker = make_worker([route(channel, broken)], debug=debug)
    worker.layer.send(channel, message)
    worker.run_once(block=False)
    assert drain(worker.layer, "srv!") == expected


def test_deny_connection_rejects_the_handshake():
    """DenyConnection raised on websocket.connect replies {"close": True}."""
    def deny(message):
        message.reply_channel.send({"accept": True})
        raise DenyConnection()

    worker = make_worker([route("websocket.connect", deny)])
    worker.layer.send("websocket.connect", ws_connect())
    worker.run_once(block=False)
    assert drain(worker.layer, "srv!") == [{"close": True}]


def test_async_consumer_runs_on_the_worker_loop_and_its_sends_are_held():
    """An async def consumer runs on the worker's event loop; its sends flush after it."""
    loop_threads, pending = [], []

    async def consumer(message):
        loop_threads.append(threading.current_thread().name)
        before = message.layer.channel_statistics("srv!")["messages_pending"]
        message.reply_channel.send({"status": 200})
        pending.append(message.layer.channel_statistics("srv!")["messages_pending"] - before)

    worker = make_worker([route("http.request", consumer)])
    try:
        worker.layer.send("http.request", http_request())
        worker.layer.send("http.request", http_request())
        worker.run_once(block=False)
        worker.run_once(block=False)
    finally:
        worker._async.stop()
    assert pending == [0, 0]  # held while the coroutine ran
    assert drain(worker.layer, "srv!") == [{"status": 200}, {"status": 200}]
    assert loop_threads[0] == loop_threads[1] != threading.current_thread().name


def test_async_consumer_error_is_logged(caplog):
    """An async consumer that raises is logged like a sync one, its sends dropped (the
    client gets the 500 instead)."""
    async def consumer(message):
        message.reply_channel.send({"status": 200})
        raise KeyError("nope")

    worker = make_worker([route("http.request", consumer)])
    try:
        worker.layer.send("http.request", http_request())
        with caplog.at_level(logging.ERROR, logger="worker"):
            worker.run_once(block=False)
    finally:
        worker._async.stop()
    assert "KeyError" in caplog.text
    assert drain(worker.layer, "srv!") == [_error_response(False)]


def test_channel_filters_select_and_refuse_empty():
    """only/exclude globs narrow the channels; filtering out everything is an error."""
    assert select_channels({"a.x", "a.y", "b"}, only=["a.*"], exclude=["*.y"]) == ["a.x"]
    worker = make_worker([route(["a", "b"], hello)], exclude_channels=["b"])
    assert worker.channels == ["a"]
    with pytest.raises(ValueError, match="no channels to consume"):
        make_worker([route("a", hello)], only_channels=["z*"])


def test_invalid_worker_name_is_refused():
    """A worker name the registry cannot hold is refused at construction."""
    with pytest.raises(ValueError, match="group name"):
        make_worker([route("a", hello)], name="bad name")


def test_heartbeat_registers_info_that_expires_and_unregister_removes_it():
    """heartbeat() registers channels and status with a TTL; unregister() removes it."""
    layer = memory_layer()
    worker = make_worker([route("http.request", hello)], layer=layer, name="w1",
                         heartbeat_ttl=15)
    assert worker.heartbeat()
    info = layer.live_processes(KIND_WORKER)["w1"]
    assert info["channels"] == ["http.request"] and info["busy"] == 0
    assert info["current"] is None and info["processed"] == 0 and info["threads"] == 1
    assert set(info) == {"channels", "host", "pid", "threads", "started_at", "processed",
                         "busy", "current", "current_since", "failed", "by_channel",
                         "heartbeat_at", "heartbeat_interval"}
    assert info["heartbeat_at"] == layer.clock() and info["by_channel"] == {}
    assert list(live_consumers(layer, "http.request")) == ["w1"]
    layer.clock.advance(16)
    assert live_consumers(layer, "http.request") == {}
    worker.heartbeat()
    worker.unregister()
    assert layer.live_processes(KIND_WORKER) == {}


def test_info_shows_the_message_being_handled():
    """While a consumer runs, info() reports busy=1 and the current channel."""
    seen = []
    worker = None

    def consumer(message):
        seen.append(worker.info())

    worker = make_worker([route("jobs", consumer)])
    worker.layer.send("jobs", {})
    worker.run_once(block=False)
    assert (seen[0]["busy"], seen[0]["current"]) == (1, "jobs")
    assert (worker.info()["busy"], worker.info()["current"], worker.info()["processed"]) == \
        (0, None, 1)


def test_info_counts_handled_failed_and_time_per_channel():
    """info() reports when the current message started, and per channel how many
    messages were handled, how many consumers raised, and the seconds they took."""
    seen = []
    worker = None

    def consumer(message):
        seen.append(worker.info())
        if message.get("fail"):
            raise RuntimeError("boom")

    worker = make_worker([route("jobs", consumer)], clock=lambda: 1000.0)
    worker.layer.send("jobs", {})
    worker.layer.send("jobs", {"fail": True})
    worker.run_once(block=False)
    worker.run_once(block=False)
    assert seen[0]["current_since"] == 1000.0
    info = worker.info()
    assert (info["processed"], info["failed"], info["current_since"]) == (2, 1, None)
    handled, seconds, failed = info["by_channel"]["jobs"]
    assert (handled, failed) == (2, 1) and 0 <= seconds < 5


def test_heartbeat_failure_is_logged_not_raised(caplog):
    """A heartbeat that cannot reach the layer logs an error and returns False."""
    layer = memory_layer()
    worker = make_worker([route("a", hello)], layer=layer)

    def down(*args):
        raise LayerUnavailable("gone")

    layer.register_process = down
    with caplog.at_level(logging.ERROR, logger="worker"):
        assert worker.heartbeat() is False
    assert "heartbeat failed: LayerUnavailable: gone" in caplog.text


def test_run_with_threads_handles_messages_and_stops_cleanly():
    """run() with 2 threads consumes concurrently, and after stop() unregisters and returns 0."""
    layer = memory_layer(blocking_timeout=0.05)
    both_inside = threading.Barrier(2, timeout=5)

    def consumer(message):
        both_inside.wait()  # only passes if two threads run consumers at once
        message.reply_channel.send({"status": 200})

    worker = Worker(layer, [route("http.request", consumer)], threads=2, name="w2",
                    heartbeat_interval=0.05, batch_size=1)
    for n in range(2):
        layer.send("http.request", http_request(reply_channel=f"srv!c{n}"))
    result = []
    runner = threading.Thread(target=lambda: result.append(worker.run(install_signals=False)))
    runner.start()
    replies = []
    for _ in range(2):
        _, reply = layer.receive(["srv!"], block=True, timeout=5)
        replies.append(reply)
    assert "w2" in layer.live_processes(KIND_WORKER)
    worker.stop()
    runner.join(5)
    assert result == [0]
    assert replies == [{"status": 200}, {"status": 200}]
    assert layer.live_processes(KIND_WORKER) == {}


def test_run_returns_1_when_a_consumer_overruns_the_shutdown_timeout():
    """A consumer still running after shutdown_timeout makes run() return 1, deregistered."""
    layer = memory_layer(blocking_timeout=0.05)
    entered, release = threading.Event(), threading.Event()

    def stuck(message):
        entered.set()
        release.wait(5)

    worker = Worker(layer, [route("jobs", stuck)], name="w3", shutdown_timeout=0.05)
    layer.send("jobs", {})
    result = []
    runner = threading.Thread(target=lambda: result.append(worker.run(install_signals=False)))
    runner.start()
    assert entered.wait(5)
    worker.stop()
    runner.join(5)
    release.set()
    assert result == [1]
    assert layer.live_processes(KIND_WORKER) == {}


def test_first_signal_stops_gracefully_second_exits_at_once(monkeypatch):
    """The first SIGTERM asks for a graceful stop; a second one (after the echo window)
    exits the process at once."""
    exits = []
    monkeypatch.setattr("os._exit", exits.append)
    worker = make_worker([route("jobs", hello)])
    worker._on_signal(15, None)
    assert worker.stopping and exits == []
    worker._first_signal_at -= 2
    worker._on_signal(15, None)
    assert exits == [128 + 15]


def test_a_message_that_cannot_be_routed_is_logged_not_raised(caplog):
    """handle() logs a message whose content breaks routing (not a dict) and returns."""
    worker = make_worker([route("jobs", hello, path=r".*")])
    with caplog.at_level(logging.ERROR, logger="worker"):
        worker.handle("jobs", ["not", "a", "dict"])
    assert "cannot route a message on 'jobs'" in caplog.text
    assert worker.processed == 1 and worker.info()["busy"] == 0


def test_worker_registers_again_as_soon_as_the_layer_is_back():
    """After a layer outage (a restarted Redis has an empty registry) the worker
    registers at once, not at its next periodic heartbeat."""
    layer = memory_layer()
    real_receive = layer.receive
    failures = [LayerUnavailable("redis down")]

    def receive(channels, block=False):
        if failures:
            raise failures.pop()
        return real_receive(channels, block=block)

    layer.receive = receive
    worker = make_worker([route("jobs", hello)], layer=layer, sleep=SleepRecorder())
    assert worker.run_once(block=False) is False
    assert worker.name not in layer.live_processes("worker")
    worker.run_once(block=False)
    assert worker.name in layer.live_processes("worker")


@pytest.mark.parametrize("debug", [False, True])
def test_http_consumer_error_answers_500_at_once(debug):
    """A consumer that raises on http.request gets its client a 500 right away (the
    traceback in debug mode), not a wait for the server's timeout."""
    def broken(message):
        raise ValueError("the view broke")

    worker = make_worker([route("http.request", broken)], debug=debug)
    worker.layer.send("http.request", http_request())
    assert worker.run_once(block=False)
    replies = drain(worker.layer, "srv!")
    assert len(replies) == 1 and replies[0]["status"] == 500
    assert (b"ValueError: the view broke" in replies[0]["content"]) is debug


def test_a_batch_is_one_receive_and_one_send_many():
    """Waiting messages are taken in one receive_batch; their replies leave in one
    send_many, each reply to its own channel, in order."""
    layer = memory_layer()
    calls = []
    for name in ("receive_batch", "send_many", "send", "receive"):
        real = getattr(layer, name)
        setattr(layer, name, lambda *a, _real=real, _name=name, **k: calls.append(_name)
                or _real(*a, **k))
    worker = make_worker([route("http.request", hello)], layer=layer, batch_size=16)
    worker._typical = 0.0001  # consumers known to be fast
    for n in range(5):
        layer.send("http.request", http_request(reply_channel=f"srv!c{n}"))
    calls.clear()
    assert worker.run_once(block=False)
    assert calls == ["receive_batch", "send_many"]
    got = layer.receive_batch(["srv!"], 10)
    assert [channel for channel, _ in got] == [f"srv!c{n}" for n in range(5)]


def test_batch_keeps_the_order_of_operations_across_messages():
    """An immediate operation of a later message (Group.add) comes after the held
    replies of earlier ones; a raising consumer's sends are dropped, not the others'."""
    layer = memory_layer()
    seen = []

    def join(message):
        message.reply_channel.send({"accept": True})  # held until this consumer returns
        Group("room", layer=layer).add(message.reply_channel)  # flushes earlier ones first
        seen.append(layer.receive(["srv!"]))

    def broken(message):
        message.reply_channel.send({"status": 200})
        raise ValueError("no")

    routing = [route("websocket.connect", join), route("http.request", broken)]
    worker = make_worker(routing, layer=layer, batch_size=16)
    worker._typical = 0.0001
    layer.send("websocket.connect", ws_connect(reply_channel="srv!a"))
    layer.send("websocket.connect", ws_connect(reply_channel="srv!b"))
    layer.send("http.request", http_request(reply_channel="srv!c"))
    assert worker.run_once(block=False)
    # srv!a's accept was held while its own consumer ran, then flushed before srv!b's
    # Group.add; srv!b's accept went at the end of the batch; srv!c got only the 500.
    assert seen == [(None, None), ("srv!a", {"accept": True})]
    rest = layer.receive_batch(["srv!"], 10)
    assert rest == [("srv!b", {"accept": True}), ("srv!c", _error_response(False))]
    assert sorted(layer.group_channels("room")) == ["srv!a", "srv!b"]


def test_batch_limit_follows_the_typical_consumer_time():
    """One message per receive until a consumer was timed; then batches sized so
    one takes about 5 ms of consumer work, at most ``batch_size``."""
    worker = make_worker([route("jobs", hello)], batch_size=16)
    assert worker.batch_limit() == 1
    for typical, limit in [(0.00001, 16), (0.001, 5), (0.004, 1), (2.0, 1)]:
        worker._typical = typical
        assert worker.batch_limit() == limit
    assert make_worker([route("jobs", hello)], batch_size=1).batch_limit() == 1


def test_echoed_signal_does_not_cut_the_stop_short(monkeypatch):
    """A SIGTERM right after SIGINT (Ctrl-C under a process manager) is the same stop
    request; one more than a second later exits at once."""
    import signal as signals

    import worker.worker as worker_module

    exits = []
    monkeypatch.setattr(worker_module.os, "_exit", exits.append)
    worker = make_worker([route("jobs", hello)])
    worker._on_signal(signals.SIGINT, None)
    worker._on_signal(signals.SIGTERM, None)
    assert exits == [] and worker._stopping.is_set()
    worker._first_signal_at -= 2
    worker._on_signal(signals.SIGTERM, None)
    assert exits == [128 + signals.SIGTERM]


def test_the_outbox_is_current_only_while_the_consumer_runs(caplog):
    """A consumer runs with its outbox current; once it returned or raised, none is
    (so a later send outside a consumer is immediate again)."""
    from worker.outbox import current_outbox

    seen = []

    def consumer(message):
        seen.append(current_outbox())
        if message["path"] == "/boom/":
            raise RuntimeError("boom")

    worker = make_worker([route("http.request", consumer)])
    for path in ("/ok/", "/boom/"):
        worker.layer.send("http.request", http_request(path))
        assert worker.run_once(block=False) is True
        assert current_outbox() is None
    assert len(seen) == 2 and all(outbox is not None for outbox in seen)
    assert seen[0] is not seen[1]
