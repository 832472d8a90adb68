"""The SQLite layer: the conformance suite, plus what only a file shared by processes shows."""

from __future__ import annotations

import multiprocessing
import os
import resource
import socket
import threading
import time

import pytest

from asgi_spec import LayerConfigError, layer_from_url
from asgi_spec.conformance import SharedLayerConformance
from asgi_spec.layers.sqlite import SQLiteChannelLayer, wake_directory


class TestSQLiteLayer(SharedLayerConformance):
    @pytest.fixture(autouse=True)
    def _database(self, tmp_path):
        self.db_path = tmp_path / "layer.db"

    def create_layer(self, **options):
        return SQLiteChannelLayer(self.db_path, **options)


def _produce(path: str, channel: str, count: int) -> None:
    layer = SQLiteChannelLayer(path, capacity=10_000)
    for n in range(count):
        layer.send(channel, {"pid": os.getpid(), "n": n})
    layer.close()


def _consume(path: str, channel: str, results) -> None:
    layer = SQLiteChannelLayer(path)
    got = []
    idle_since = time.monotonic()
    while time.monotonic() - idle_since < 1.5:
        _, message = layer.receive([channel], block=True, timeout=0.2)
        if message is not None:
            got.append((message["pid"], message["n"]))
            idle_since = time.monotonic()
    results.put(got)
    layer.close()


def test_processes_share_the_layer_exactly_once(tmp_path):
    """Two producer and two consumer processes: every message arrives once, FIFO per sender."""
    path = str(tmp_path / "layer.db")
    SQLiteChannelLayer(path).close()
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    consumers = [ctx.Process(target=_consume, args=(path, "work", results)) for _ in range(2)]
    producers = [ctx.Process(target=_produce, args=(path, "work", 300)) for _ in range(2)]
    for process in consumers + producers:
        process.start()
    per_consumer = [results.get(timeout=60), results.get(timeout=60)]
    for process in consumers + producers:
        process.join(30)
        assert process.exitcode == 0
    got = per_consumer[0] + per_consumer[1]
    assert len(got) == 600 and len(set(got)) == 600
    for received in per_consumer:  # each consumer sees each producer's messages in order
        for pid in {pid for pid, _ in received}:
            numbers = [n for p, n in received if p == pid]
            assert numbers == sorted(numbers)


def test_idle_blocked_receiver_does_not_spin(tmp_path):
    """A receiver blocked for a second with nothing to read uses almost no CPU."""
    layer = SQLiteChannelLayer(tmp_path / "layer.db", blocking_timeout=5)
    before = resource.getrusage(resource.RUSAGE_THREAD)
    assert layer.receive(["quiet"], block=True, timeout=1.0) == (None, None)
    after = resource.getrusage(resource.RUSAGE_THREAD)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert cpu < 0.1, f"blocked receive burned {cpu:.3f} s of CPU in 1 s"
    layer.close()


def test_wake_up_ignores_other_queues(tmp_path):
    """Sends to other channels do not end a blocked receive early."""
    layer = SQLiteChannelLayer(tmp_path / "layer.db")
    other = SQLiteChannelLayer(tmp_path / "layer.db")
    result = []
    reader = threading.Thread(
        target=lambda: result.append(layer.receive(["mine"], block=True, timeout=2))
    )
    reader.start()
    for n in range(20):
        other.send("theirs", {"n": n})
        time.sleep(0.005)
    assert reader.is_alive()
    other.send("mine", {"n": "yes"})
    reader.join(5)
    assert result == [("mine", {"n": "yes"})]
    layer.close()
    other.close()


def test_dead_doorbells_are_removed(tmp_path):
    """A wake socket left by a process that died is deleted by the next send."""
    layer = SQLiteChannelLayer(tmp_path / "layer.db")
    stale = wake_directory(layer.path) / "999999-deadbeef"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(stale))
    sock.close()  # the file stays, nobody listens: like a SIGKILLed process
    layer.send("any", {"x": 1})
    assert not stale.exists()
    layer.close()


def test_close_removes_own_doorbell(tmp_path):
    """Closing a layer removes the wake sockets it bound."""
    layer = SQLiteChannelLayer(tmp_path / "layer.db")
    layer.receive(["x"], block=True, timeout=0.01)
    assert list(wake_directory(layer.path).iterdir())
    layer.close()
    assert not list(wake_directory(layer.path).iterdir())


def test_long_paths_get_a_short_wake_directory(tmp_path):
    """A database path too long for a Unix socket puts its wake sockets in the temp dir."""
    deep = tmp_path / ("d" * 120) / "layer.db"
    assert len(str(wake_directory(deep))) < 80


@pytest.mark.parametrize(
    ("url", "suffix"),
    [("sqlite:///rel/layer.db", "rel/layer.db"), ("sqlite:////tmp/sb-abs/layer.db", None)],
)
def test_url_forms(tmp_path, monkeypatch, url, suffix):
    """``sqlite:///x`` is relative to the working directory, ``sqlite:////x`` absolute."""
    monkeypatch.chdir(tmp_path)
    layer = layer_from_url(url + "?expiry=5&capacity=7")
    expected = tmp_path / suffix if suffix else "/tmp/sb-abs/layer.db"
    assert str(layer.path) == str(expected)
    assert (layer.expiry, layer.capacity) == (5, 7)
    layer.close()


@pytest.mark.parametrize(
    "url", ["sqlite://", "sqlite:///", "sqlite://host/x.db?bogus=1", "sqlite:///x.db?path=y"]
)
def test_bad_urls_are_clear_errors(url):
    """A URL without a file, or with an unknown option, raises ``LayerConfigError``."""
    with pytest.raises(LayerConfigError):
        layer_from_url(url)


def test_async_send_waits_for_a_lock_off_the_event_loop(tmp_path):
    """While another process holds the write lock, ``send_async`` waits without
    blocking the event loop, and completes once the lock is released."""
    import asyncio
    import sqlite3

    layer = SQLiteChannelLayer(tmp_path / "layer.db")
    locker = sqlite3.connect(tmp_path / "layer.db", isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")
    ticks = []

    async def scenario():
        async def tick():
            for n in range(10):
                ticks.append(n)
                await asyncio.sleep(0.02)

        sending = asyncio.ensure_future(layer.send_async("locked", {"x": 1}))
        await tick()
        assert not sending.done()
        locker.execute("COMMIT")
        await asyncio.wait_for(sending, 5)
        return await layer.receive_async(["locked"], timeout=1)

    assert asyncio.run(scenario()) == ("locked", {"x": 1})
    assert ticks == list(range(10))
    locker.close()
    layer.close()


def test_cancelled_async_receive_keeps_the_message(tmp_path):
    """A ``receive_async`` cancelled while its pop waits for the file lock loses nothing:
    the message popped after the cancel is returned by the next receive."""
    import asyncio
    import sqlite3

    layer = SQLiteChannelLayer(tmp_path / "layer.db")
    layer.send("kept", {"x": 1})
    locker = sqlite3.connect(tmp_path / "layer.db", isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")

    async def scenario():
        receiving = asyncio.ensure_future(layer.receive_async(["kept"], timeout=5))
        await asyncio.sleep(0.1)
        receiving.cancel()
        locker.execute("COMMIT")
        await asyncio.sleep(0.3)  # the helper thread's pop completes
        return receiving.cancelled()

    assert asyncio.run(scenario())
    assert layer.receive(["kept"]) == ("kept", {"x": 1})
    locker.close()
    layer.close()


def test_check_reports_an_unusable_file(tmp_path):
    """``check()`` passes on a good file and raises ``LayerUnavailable`` on a broken one."""
    from asgi_spec import LayerUnavailable

    layer = SQLiteChannelLayer(tmp_path / "layer.db")
    layer.check()
    layer.close()
    (tmp_path / "layer.db").write_bytes(b"this is not a database" * 100)
    for leftover in ("layer.db-wal", "layer.db-shm"):
        (tmp_path / leftover).unlink(missing_ok=True)
    with pytest.raises(LayerUnavailable):
        SQLiteChannelLayer(tmp_path / "layer.db").check()


def test_send_many_async_retried_after_a_lock_sends_each_message_once(tmp_path):
    """A batch that meets a locked file part-way (the event loop's connection never
    waits for a lock) is one transaction: it is rolled back and sent again on the
    helper thread, so every message arrives exactly once, in order."""
    import asyncio

    from asgi_spec.layers import sqlite as sqlite_module

    layer = SQLiteChannelLayer(str(tmp_path / "layer.db"))
    real_push = layer._push
    pushes = {"n": 0}

    def push_meeting_a_lock(*args, **kwargs):
        pushes["n"] += 1
        if pushes["n"] == 3 and getattr(layer._local, "nowait", False):
            raise sqlite_module._Busy()  # what a locked file does to the loop's connection
        return real_push(*args, **kwargs)

    layer._push = push_meeting_a_lock
    outcomes = asyncio.run(layer.send_many_async([("sb.dup", {"n": n}) for n in range(4)]))
    assert outcomes == [None] * 4
    assert pushes["n"] > 4  # the lock was met and the batch sent again
    got = [message["n"] for _, message in layer.receive_batch(["sb.dup"], 10)]
    assert got == [0, 1, 2, 3]
    layer.close()
