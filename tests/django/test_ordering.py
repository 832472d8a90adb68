"""``enforce_ordering``: a connection's messages run one at a time, in order, exactly once --
with consumers in one thread, in several threads, and in several worker processes.

The test project's ``/ws/ordered/`` consumers count every message in the channel
session and answer ``"<order>:<count>"``; with ordering, the count a message sees is
always its order (the connect is 0).
"""

from __future__ import annotations

import logging
import random
import subprocess
import sys
import threading
import time
from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone

from asgi_spec import formats
from worker.django import ordering
from worker.django.models import OrderingState, ParkedMessage
from worker.django.ordering import RECHECK_KEY, enforce_ordering, ordering_key
from worker.django.sessions import channel_session
from worker.django.testing import WSClient, apply_routes
from worker.exceptions import ConsumeLater
from worker.routing import route

DEADLINE = 30.0


def frame(client, order, text="x"):
    return {"reply_channel": client.reply_channel, "path": client.path, "order": order,
            "text": text}


def goodbye(client, order):
    return {"reply_channel": client.reply_channel, "path": client.path, "order": order,
            "code": 1000}


def replies(client):
    out = []
    while (reply := client.receive()) is not None:
        out.append(reply.get("text"))
    return out


def rows(client):
    key = ordering_key(client.reply_channel)
    return (OrderingState.objects.filter(key=key).count(),
            ParkedMessage.objects.filter(key=key).count())


def drain(client, channel=formats.WEBSOCKET_RECEIVE):
    """Consume what waits on ``channel`` (messages sent back when their turn came)."""
    layer = client.channel_layer
    while True:
        name, content = layer.receive([channel])
        if name is None:
            return
        client.send_and_consume(channel, content)


@pytest.fixture
def client(db):
    ws = WSClient()
    assert ws.connect("/ws/ordered/") == {"accept": True}
    return ws


def test_frames_that_arrive_early_wait_for_their_turn(client):
    """Frames 3, 1, 2 consumed in that order run as 1, 2, 3: frame 3 waits (no reply, one
    parked row) and is sent back to websocket.receive when frame 2 is done."""
    client.send_and_consume(formats.WEBSOCKET_RECEIVE, frame(client, 3))
    assert replies(client) == [] and rows(client) == (1, 1)
    client.send_and_consume(formats.WEBSOCKET_RECEIVE, frame(client, 1))
    client.send_and_consume(formats.WEBSOCKET_RECEIVE, frame(client, 2))
    client.consume(formats.WEBSOCKET_RECEIVE)  # frame 3, back from the table
    assert replies(client) == ["1:1", "2:2", "3:3"]
    assert rows(client) == (1, 0)


def test_a_disconnect_that_arrives_first_runs_last_and_removes_the_rows(client):
    """The disconnect (order 3) consumed before frames 1 and 2 waits, runs after them, and
    then deletes the connection's ordering rows and channel session."""
    client.send_and_consume(formats.WEBSOCKET_DISCONNECT, goodbye(client, 3))
    assert rows(client) == (1, 1)
    client.send_and_consume(formats.WEBSOCKET_RECEIVE, frame(client, 2))
    client.send_and_consume(formats.WEBSOCKET_RECEIVE, frame(client, 1))
    client.consume(formats.WEBSOCKET_RECEIVE)
    assert replies(client) == ["1:1", "2:2"]
    client.consume(formats.WEBSOCKET_DISCONNECT)
    assert rows(client) == (0, 0)


def test_duplicates_run_once(client, caplog):
    """A frame delivered twice (an at-least-once redelivery) runs once: the copy is dropped
    whether it comes after the frame ran or while the frame waits."""
    client.send_and_consume(formats.WEBSOCKET_RECEIVE, frame(client, 1))
    with caplog.at_level(logging.WARNING, "worker.django.ordering"):
        client.send_and_consume(formats.WEBSOCKET_RECEIVE, frame(client, 1))
        client.send_and_consume(formats.WEBSOCKET_RECEIVE, frame(client, 3))
        client.send_and_consume(formats.WEBSOCKET_RECEIVE, frame(client, 3))
    assert "handled already" in caplog.text and "waiting already" in caplog.text
    client.send_and_consume(formats.WEBSOCKET_RECEIVE, frame(client, 2))
    drain(client)
    assert replies(client) == ["1:1", "2:2", "3:3"]


def test_consume_later_keeps_the_turn_and_errors_pass_it_on(db):
    """ConsumeLater leaves the message first in line (it runs again, then the next one);
    a consumer that raises counts as done, so the connection goes on."""
    seen = []
    attempts = {"later": 0}

    @enforce_ordering
    def receive(message, **kwargs):
        text = message["text"]
        if text == "later" and attempts["later"] == 0:
            attempts["later"] += 1
            raise ConsumeLater()
        seen.append(message["order"])
        if text == "boom":
            raise RuntimeError("boom")

    with apply_routes([route("websocket.connect", enforce_ordering(lambda m, **k: None)),
                       route("websocket.receive", receive)]):
        client = WSClient()
        client.connect("/", check_accept=False)
        client.send_and_consume(formats.WEBSOCKET_RECEIVE, frame(client, 2))
        client.send_and_consume(formats.WEBSOCKET_RECEIVE, frame(client, 1, "later"))
        assert seen == []
        client.consume(formats.WEBSOCKET_RECEIVE)  # 1, requeued by ConsumeLater
        client.consume(formats.WEBSOCKET_RECEIVE)  # 2, sent back after 1
        assert seen == [1, 2]
        with pytest.raises(RuntimeError):
            client.send_and_consume(formats.WEBSOCKET_RECEIVE, frame(client, 3, "boom"))
        client.send_and_consume(formats.WEBSOCKET_RECEIVE, frame(client, 4))
        assert seen == [1, 2, 3, 4]


def test_an_undecorated_connect_consumer_is_fine(db):
    """When only the receive consumer is ordered, the first frame seen starts the count at
    1 (a frame exists only after the connect was accepted): frames 2, 1 run as 1, 2."""
    seen = []

    @enforce_ordering
    def receive(message, **kwargs):
        seen.append(message["order"])

    with apply_routes([route("websocket.connect", lambda m, **k: None),
                       route("websocket.receive", receive)]):
        client = WSClient()
        client.connect("/", check_accept=False)
        client.send_and_consume(formats.WEBSOCKET_RECEIVE, frame(client, 2))
        client.send_and_consume(formats.WEBSOCKET_RECEIVE, frame(client, 1))
        client.consume(formats.WEBSOCKET_RECEIVE)
    assert seen == [1, 2]


def test_strict_ordering_flag_of_generic_consumers(db):
    """strict_ordering = True on a generic consumer orders its frames (and loads its
    channel session only in turn)."""
    client = WSClient()
    client.connect("/ws/ordered-class/")
    client.send_and_consume(formats.WEBSOCKET_RECEIVE, frame(client, 2, "b"))
    client.send_and_consume(formats.WEBSOCKET_RECEIVE, frame(client, 1, "a"))
    client.consume(formats.WEBSOCKET_RECEIVE)
    assert replies(client) == ["a:0", "b:1"]


def test_wrong_uses_fail_with_a_clear_message(db):
    """enforce_ordering below channel_session, on a message without order, on an async
    consumer, or with slight=True fails saying what to do."""

    @channel_session
    @enforce_ordering
    def inverted(message, **kwargs):
        pass

    with apply_routes([route("websocket.connect", inverted)]), \
            pytest.raises(TypeError, match="outermost"):
        WSClient().connect("/", check_accept=False)
    with apply_routes([route("http.request", enforce_ordering(lambda m, **k: None))]), \
            pytest.raises(ValueError, match="no order"):
        WSClient().send_and_consume("http.request", {"reply_channel": "t!x", "path": "/"})

    async def coroutine(message):
        pass

    with pytest.raises(TypeError, match="synchronous"):
        enforce_ordering(coroutine)
    with pytest.raises(ValueError, match="slight"):
        enforce_ordering(slight=True)


def backdate(client, seconds=120):
    """Make the connection's rows look ``seconds`` old (no sleeping through a timeout)."""
    key = ordering_key(client.reply_channel)
    then = timezone.now() - timedelta(seconds=seconds)
    OrderingState.objects.filter(key=key).update(updated_at=then)
    ParkedMessage.objects.filter(key=key).update(parked_at=then)


@override_settings(CHANNEL_ORDERING_GAP_TIMEOUT=60)
def test_a_lost_frame_is_skipped_once_it_must_have_expired(client, caplog):
    """Frame 1 never comes (the layer lost it): frame 2 waits; once the gap is older than
    CHANNEL_ORDERING_GAP_TIMEOUT, the next frame to arrive lets frame 2 run, then itself,
    with a warning; frame 1 arriving after all is dropped."""
    client.send_and_consume(formats.WEBSOCKET_RECEIVE, frame(client, 2))
    client.send_and_consume(formats.WEBSOCKET_RECEIVE, frame(client, 3))
    assert replies(client) == [] and rows(client) == (1, 2)
    backdate(client)
    with caplog.at_level(logging.WARNING, "worker.django.ordering"):
        client.send_and_consume(formats.WEBSOCKET_RECEIVE, frame(client, 4))
        drain(client)
        client.send_and_consume(formats.WEBSOCKET_RECEIVE, frame(client, 1))
    assert replies(client) == ["2:1", "3:2", "4:3"]
    assert "skipped order 1..1" in caplog.text and "handled already" in caplog.text


@override_settings(CHANNEL_ORDERING_GAP_TIMEOUT=60)
def test_a_disconnect_behind_a_lost_frame_asks_the_delay_server_to_look_again(client):
    """A disconnect that waits behind a lost frame sends itself to asgi.delay (after the gap
    timeout); that copy, once the gap is old enough, runs the disconnect, whose consumer
    sees every earlier message and removes the rows. A copy for a disconnect that ran
    already does nothing."""
    client.send_and_consume(formats.WEBSOCKET_DISCONNECT, goodbye(client, 2))
    layer = client.channel_layer
    name, request = layer.receive([formats.ASGI_DELAY])
    assert name == formats.ASGI_DELAY and request["delay"] == 61_000
    assert request["channel"] == formats.WEBSOCKET_DISCONNECT
    assert request["content"][RECHECK_KEY] == 1
    # Too early (the gap is young): the copy asks again and the disconnect keeps waiting.
    client.send_and_consume(formats.WEBSOCKET_DISCONNECT, request["content"])
    _, again = layer.receive([formats.ASGI_DELAY])
    assert again["content"][RECHECK_KEY] == 2 and rows(client) == (1, 1)
    backdate(client)
    client.send_and_consume(formats.WEBSOCKET_DISCONNECT, again["content"])
    assert rows(client) == (0, 0)
    client.send_and_consume(formats.WEBSOCKET_DISCONNECT, again["content"])  # a late copy
    assert rows(client) == (0, 0)
    assert layer.receive([formats.ASGI_DELAY]) == (None, None)


def test_rows_of_abandoned_connections_expire(client, monkeypatch):
    """Rows without progress for CHANNEL_SESSION_EXPIRY seconds (a connection that never
    sent its disconnect) are removed when a later connection starts."""
    client.send_and_consume(formats.WEBSOCKET_RECEIVE, frame(client, 2))
    backdate(client, seconds=86400 + 10)
    monkeypatch.setattr(ordering, "_last_cleanup", 0.0)
    WSClient().connect("/ws/ordered/")
    assert rows(client) == (0, 0)


# -- real concurrency ----------------------------------------------------------------


def _race(monkeypatch, park_first):
    """Frame 1 runs in a thread while frame 2 arrives in this one and must wait; the two
    steps the 1.x code raced on -- frame 2 parking, frame 1 finishing -- happen in the
    order given, forced with events. Returns the orders run and what was sent back."""
    from worker.django.layers import get_channel_layer
    from worker.message import Message

    layer = get_channel_layer().layer
    reply_channel = "race.test!conn"
    seen, inside, frame1_may_end, frame1_done = [], threading.Event(), threading.Event(), \
        threading.Event()

    @enforce_ordering
    def consumer(message):
        if message["order"] == 1:
            inside.set()
            assert frame1_may_end.wait(DEADLINE)
        seen.append(message["order"])

    def run(order, channel=formats.WEBSOCKET_RECEIVE):
        consumer(Message({"reply_channel": reply_channel, "path": "/", "order": order,
                          "text": ""}, channel, layer))

    real_park = ordering._park

    def park(*args):
        # Frame 2 has seen frame 1 running and decided to wait.
        if park_first:
            parked = real_park(*args)
            frame1_may_end.set()
            assert frame1_done.wait(DEADLINE)  # frame 1 finished and found frame 2 parked
            return parked
        frame1_may_end.set()
        assert frame1_done.wait(DEADLINE)  # frame 1 finished and looked for frame 2 before
        return real_park(*args)

    monkeypatch.setattr(ordering, "_park", park)
    OrderingState.objects.create(key=ordering_key(reply_channel), next_order=1,
                                 updated_at=timezone.now())

    def first():
        try:
            run(1)
        finally:
            frame1_done.set()

    thread = threading.Thread(target=first)
    thread.start()
    try:
        assert inside.wait(DEADLINE)
        run(2)
        thread.join(DEADLINE)
        sent_back = layer.receive([formats.WEBSOCKET_RECEIVE])
        if sent_back[0] is not None:
            run(sent_back[1]["order"])
        run(3, formats.WEBSOCKET_DISCONNECT)
    finally:
        frame1_may_end.set()
        thread.join(DEADLINE)
        OrderingState.objects.filter(key=ordering_key(reply_channel)).delete()
        ParkedMessage.objects.filter(key=ordering_key(reply_channel)).delete()
    return seen, sent_back[1]


def test_a_frame_parked_after_the_previous_one_finished_is_not_stuck(monkeypatch):
    """The 1.x race, forced: frame 2 sees frame 1 running, frame 1 finishes and finds
    nothing waiting, then frame 2 parks. Frame 2 looks again after parking, finds its
    turn has come and runs at once (in 1.x it stayed in the wait channel)."""
    seen, sent_back = _race(monkeypatch, park_first=False)
    assert seen == [1, 2, 3] and sent_back is None


def test_a_frame_parked_before_the_previous_one_finished_is_sent_back(monkeypatch):
    """The other order: frame 2 is parked while frame 1 still runs; frame 1, finishing,
    claims it and sends it back to websocket.receive, where it runs once."""
    seen, sent_back = _race(monkeypatch, park_first=True)
    assert seen == [1, 2, 3] and sent_back["order"] == 2


def shuffled_traffic(clients, frames, seed):
    """Every client's frames 1..frames and its disconnect, shuffled together."""
    messages = []
    for ws in clients:
        messages += [(formats.WEBSOCKET_RECEIVE, frame(ws, n, str(n)))
                     for n in range(1, frames + 1)]
        messages.append((formats.WEBSOCKET_DISCONNECT, goodbye(ws, frames + 1)))
    random.Random(seed).shuffle(messages)
    return messages


def test_worker_threads_run_shuffled_frames_in_order():
    """A worker with 4 threads over one shared database: 4 connections' frames and
    disconnects, sent shuffled, are each answered once, in order, with the session count
    equal to the order; no ordering row or session is left."""
    from django.contrib.sessions.models import Session

    from worker.django.layers import get_channel_layer
    from worker.worker import Worker

    wrapper = get_channel_layer()
    worker = Worker(wrapper.layer, wrapper.router, threads=4, name="ordering-threads")
    runner = threading.Thread(target=worker.run, kwargs={"install_signals": False},
                              daemon=True)
    runner.start()
    clients, frames = [WSClient() for _ in range(4)], 25
    try:
        for ws in clients:
            ws.path = "/ws/ordered/"
            wrapper.send(formats.WEBSOCKET_CONNECT, {**frame(ws, 0), "headers": []})
        for ws in clients:  # like the server: frames only once the socket is accepted
            wait_for(lambda ws=ws: ws.receive_raw() == {"accept": True}, "an accept")
        for channel, content in shuffled_traffic(clients, frames, seed=5):
            wrapper.send(channel, content)
        got = {ws.reply_channel: [] for ws in clients}

        def all_answered():
            for ws in clients:
                while (reply := ws.receive_raw()) is not None:
                    got[ws.reply_channel].append(reply["text"])
            return all(len(texts) == frames for texts in got.values())

        wait_for(all_answered, "every frame answered")
        wait_for(lambda: not OrderingState.objects.exists(), "the disconnects")
    finally:
        worker.stop()
        runner.join(DEADLINE)
    for texts in got.values():
        assert texts == [f"{n}:{n}" for n in range(1, frames + 1)]
    assert not ParkedMessage.objects.exists()
    assert not Session.objects.filter(session_key__startswith="chn").exists()


def wait_for(condition, what, deadline=DEADLINE):
    end = time.monotonic() + deadline
    while not condition():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.02)


@pytest.mark.slow
def test_worker_processes_run_shuffled_frames_in_order_exactly_once(tmp_path):
    """Three `manage.py runworker` processes (2 threads each) over the SQLite layer and one
    SQLite database: 5 connections x 40 frames plus disconnects, sent shuffled, run exactly
    once each and in order per connection (the order log, appended by the consumers of all
    processes), each seeing the session count of the messages before it; the replies
    arrive in order; every process took part; no ordering row is left."""
    from asgi_spec.layers.sqlite import SQLiteChannelLayer
    from asgi_spec.registry import KIND_WORKER
    from tests.django.test_commands import REPO, clean_env, stop

    url = f"sqlite:///{tmp_path}/layer.db?capacity=1000"
    log = tmp_path / "order.log"
    env = clean_env(CHANNEL_LAYER_URL=url, SWITCHBOARD_TEST_DB=str(tmp_path / "db.sqlite3"),
                    SWITCHBOARD_ORDER_LOG=str(log))
    subprocess.run([sys.executable, "-m", "django", "migrate", "-v", "0"], cwd=REPO, env=env,
                   check=True, timeout=120)
    workers = [subprocess.Popen([sys.executable, "-m", "django", "runworker", "--threads", "2",
                                 "--name", f"ordw{n}"], cwd=REPO, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
               for n in range(3)]
    layer = SQLiteChannelLayer(tmp_path / "layer.db", capacity=1000)
    clients, frames = [WSClient() for _ in range(5)], 40
    prefix = clients[0].prefix
    for ws in clients:  # one reply prefix: the test reads every reply with one receive
        ws.prefix, ws.reply_channel = prefix, prefix + ws.reply_channel.split("!")[1]
    try:
        wait_for(lambda: set(layer.live_processes(KIND_WORKER)) >= {"ordw0", "ordw1", "ordw2"},
                 "the workers to register")
        for ws in clients:
            ws.path = "/ws/ordered/"
            layer.send(formats.WEBSOCKET_CONNECT, {**frame(ws, 0), "headers": []})
        replies_by_channel = {ws.reply_channel: [] for ws in clients}

        def take_replies():
            while True:
                name, content = layer.receive([prefix], block=False)
                if name is None:
                    return
                replies_by_channel[name].append(content.get("text", content))

        def accepted():
            take_replies()
            return all(texts for texts in replies_by_channel.values())

        wait_for(accepted, "the accepts")
        for channel, content in shuffled_traffic(clients, frames, seed=11):
            layer.send(channel, content)
        total = len(clients) * (frames + 2)
        wait_for(lambda: log.exists() and len(log.read_text().splitlines()) >= total,
                 "every message in the order log", deadline=120)

        def finished():
            take_replies()
            return all(len(texts) == frames + 1 for texts in replies_by_channel.values())

        wait_for(finished, "every reply")
    finally:
        codes = [stop(process)[0] for process in workers]
        layer.close()
    assert codes == [0, 0, 0]
    lines = [line.split() for line in log.read_text().splitlines()]
    assert len(lines) == total
    for ws in clients:
        mine = [(int(order), int(count)) for channel, order, count, _ in lines
                if channel == ws.reply_channel]
        assert mine == [(n, n) for n in range(frames + 2)]
        assert replies_by_channel[ws.reply_channel] == [
            {"accept": True}, *(f"{n}:{n}" for n in range(1, frames + 1))]
    assert len({pid for *_, pid in lines}) == 3, "every worker process ran messages"
    check = subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); "
         "from worker.django.models import OrderingState, ParkedMessage; "
         "print(OrderingState.objects.count(), ParkedMessage.objects.count())"],
        cwd=REPO, env=env, capture_output=True, timeout=60, check=True)
    assert check.stdout.split() == [b"0", b"0"]
