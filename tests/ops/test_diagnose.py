"""``asgi_spec.ops.diagnose``: each rule on hand-built snapshots, at a chosen ``now``."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from asgi_spec.ops import (
    ERROR,
    INFO,
    WARNING,
    ChannelStatus,
    ServerStatus,
    Snapshot,
    Thresholds,
    WorkerStatus,
    diagnose,
    healthy,
)

NOW = 1_000_000.0


def worker(name: str = "w1", channels: tuple[str, ...] | None = ("http.request",),
           **info: Any) -> WorkerStatus:
    defaults: dict[str, Any] = {"threads": 1, "busy": 0, "processed": 0, "failed": 0,
                                "started_at": NOW - 600, "heartbeat_at": NOW - 1,
                                "heartbeat_interval": 5.0}
    return WorkerStatus(name=name, channels=channels, **{**defaults, **info})


def server(name: str = "srv", **info: Any) -> ServerStatus:
    defaults: dict[str, Any] = {"reply_prefix": f"{name}!", "heartbeat_at": NOW - 1,
                                "heartbeat_interval": 5.0, "http_connections": 0,
                                "websockets": 0, "requests_in_flight": 0}
    return ServerStatus(name=name, **{**defaults, **info})


def channel(name: str = "http.request", pending: int = 0, *, capacity: int = 100,
            consumers: tuple[str, ...] = ("w1",), **counts: Any) -> ChannelStatus:
    return ChannelStatus(name=name, pending=pending, oldest_age=counts.pop("oldest_age", 0.0),
                         capacity=capacity, consumers=consumers, **counts)


def look(channels: tuple[ChannelStatus, ...] = (), workers: tuple[WorkerStatus, ...] = (),
         servers: tuple[ServerStatus, ...] = (), **extra: Any) -> Snapshot:
    return Snapshot(taken_at=extra.pop("taken_at", NOW), expiry=extra.pop("expiry", 60.0),
                    channels=channels, workers=workers, servers=servers, **extra)


def healthy_look() -> Snapshot:
    return look(channels=(channel(pending=3, oldest_age=0.2, sent=100),
                          channel("srv!", 0, capacity=100_000, consumers=("srv",))),
                workers=(worker(),), servers=(server(),))


def codes(problems: list[Any]) -> list[tuple[str, str, str]]:
    return [(p.severity, p.code, p.subject) for p in problems]


def test_a_healthy_deployment_has_no_problems():
    """Live workers consuming http.request, short queues and fresh heartbeats: nothing."""
    problems = diagnose(healthy_look(), NOW)
    assert problems == []
    assert healthy(problems)


def test_no_live_worker_is_an_error():
    """With the registry readable and empty of workers, that is the first thing said."""
    problems = diagnose(look(servers=(server(),)), NOW)
    assert codes(problems) == [(ERROR, "no-workers", "")]
    assert "no live worker is registered" in problems[0].message
    assert not healthy(problems)


def test_no_worker_consumes_http_request_while_a_server_is_live():
    """Workers that only consume other channels: "no live worker consumes http.request"."""
    problems = diagnose(look(workers=(worker(channels=("chat",)),), servers=(server(),)), NOW)
    assert codes(problems) == [(ERROR, "no-consumer", "http.request")]
    assert problems[0].message.startswith("no live worker consumes http.request")


def test_http_request_needs_no_consumer_without_interface_servers():
    """A deployment of background workers only is not told to consume http.request."""
    assert diagnose(look(workers=(worker(channels=("jobs",)),)), NOW) == []


def test_globs_and_consume_everything_workers_count_as_consumers():
    """A worker consuming ``http.*``, or publishing no channel list, consumes http.request."""
    for consumer in (worker(channels=("http.*",)), worker(channels=None)):
        assert diagnose(look(workers=(consumer,), servers=(server(),)), NOW) == []


def test_pending_messages_that_nobody_consumes():
    """Messages waiting on a channel without a live consumer are an error naming the count."""
    problems = diagnose(look(channels=(channel("orphan", 3, consumers=()),),
                             workers=(worker(),)), NOW)
    assert codes(problems) == [(ERROR, "no-consumer", "orphan")]
    assert problems[0].message == "3 messages waiting on orphan and no live worker consumes it"


def test_replies_waiting_for_a_gone_server():
    """A reply queue with messages and no live server reading it says the server is gone."""
    problems = diagnose(look(channels=(channel("old!", 1, consumers=()),),
                             workers=(worker(),)), NOW)
    assert problems[0].message == "1 reply waiting on old! and its interface server is gone"


def test_an_empty_channel_without_consumers_is_fine():
    """A channel no one consumes but with nothing waiting is not a problem."""
    assert diagnose(look(channels=(channel("spare", 0, consumers=()),),
                         workers=(worker(),)), NOW) == []


@pytest.mark.parametrize(("pending", "expected"), [
    (95, [(ERROR, "channel-full", "http.request")]),
    (90, [(ERROR, "channel-full", "http.request")]),
    (80, [(WARNING, "channel-filling", "http.request")]),
    (74, []),
])
def test_fill_thresholds(pending, expected):
    """90 % full and more is an error (senders get ChannelFull soon), 75 % a warning."""
    got = diagnose(look(channels=(channel(pending=pending),), workers=(worker(busy=0),)), NOW)
    assert codes(got) == expected


def test_full_channel_message_is_plain():
    """The sentence names the channel, the percentage and the counts."""
    got = diagnose(look(channels=(channel("chat", 95),), workers=(worker(),)), NOW)
    assert got[0].message == "channel chat 95% full (95/100): senders get ChannelFull"


def test_fill_thresholds_can_be_changed():
    """``Thresholds`` moves the limits."""
    got = diagnose(look(channels=(channel(pending=50),), workers=(worker(),)), NOW,
                   thresholds=Thresholds(fill_warning=0.4, fill_error=0.6))
    assert codes(got) == [(WARNING, "channel-filling", "http.request")]


def test_old_messages_warn_at_half_their_expiry_measured_at_now():
    """The oldest message's age is its age at ``taken_at`` plus the time since: a snapshot
    judged 20 s later has messages 20 s older."""
    snap = look(channels=(channel(pending=1, oldest_age=15.0),),
                workers=(worker(heartbeat_at=NOW + 19),))
    assert diagnose(snap, NOW) == []
    got = diagnose(snap, NOW + 20)
    assert codes(got) == [(WARNING, "old-messages", "http.request")]
    assert got[0].message == ("the oldest message on http.request has waited 35 s of its "
                              "60 s expiry")


def test_old_message_rule_uses_the_layer_expiry():
    """With a 10 s expiry, a 6 s old message is already a warning."""
    snap = look(channels=(channel(pending=1, oldest_age=6.0),), workers=(worker(),), expiry=10)
    assert codes(diagnose(snap, NOW)) == [(WARNING, "old-messages", "http.request")]


@pytest.mark.parametrize(("age", "expected"), [
    (2.9, []),
    (3.2, [(WARNING, "stale-heartbeat", "w1")]),
    (10.4, [(ERROR, "stale-heartbeat", "w1")]),
])
def test_stale_worker_heartbeat(age, expected):
    """With a 5 s heartbeat interval (beats every second) a worker whose heartbeat is over
    3 s old (0.6 intervals) is stale, a warning -- so a killed worker shows within one
    interval; past two intervals it is an error. A second, fresh worker keeps the
    deployment served, so only the heartbeat rule speaks."""
    snap = look(workers=(worker(heartbeat_at=NOW - age), worker("w2")))
    got = diagnose(snap, NOW)
    assert codes(got) == expected
    if expected:
        assert got[0].message.startswith(f"worker w1 heartbeat {age:.2g} s stale "
                                         "(heartbeat interval 5.0 s)")


def test_a_stale_worker_is_not_live():
    """When the only worker's heartbeat is stale, nothing consumes anything: an error
    saying so, besides the stale heartbeat itself (the interface server answers 503 too)."""
    snap = look(workers=(worker(heartbeat_at=NOW - 3.5),), servers=(server(),))
    got = diagnose(snap, NOW)
    assert codes(got) == [(ERROR, "no-workers", ""), (WARNING, "stale-heartbeat", "w1")]
    assert "every registered worker's heartbeat is stale" in got[0].message
    other = look(workers=(worker(heartbeat_at=NOW - 3.5), worker("w2", channels=("jobs",))),
                 servers=(server(),))
    assert (ERROR, "no-consumer", "http.request") in codes(diagnose(other, NOW))


def test_stale_server_heartbeat_uses_its_own_interval():
    """A server with a 1 s heartbeat interval is stale once its heartbeat is 0.6 s old
    (2 s here: a warning, not yet past two intervals)."""
    snap = look(workers=(worker(),), servers=(server(heartbeat_at=NOW - 2,
                                                     heartbeat_interval=1.0),))
    got = diagnose(snap, NOW)
    assert codes(got) == [(WARNING, "stale-heartbeat", "srv")]
    assert got[0].message.startswith("interface server srv heartbeat 2.0 s stale")


def test_processes_that_publish_no_times_are_not_judged():
    """An old-style worker without heartbeat_at or current_since raises no time problem."""
    old = WorkerStatus.from_info("w1", {"channels": ["http.request"], "busy": True,
                                        "current": "http.request"})
    assert diagnose(look(workers=(old,), servers=(server(),)), NOW) == []


def test_a_message_handled_for_long_looks_stuck():
    """A consumer running past 30 s is a warning naming the worker, channel and time."""
    snap = look(workers=(worker(busy=1, current="jobs", current_since=NOW - 45),))
    got = diagnose(snap, NOW)
    assert codes(got) == [(WARNING, "long-message", "w1")]
    assert got[0].message == "worker w1 has been handling a message on jobs for 45 s"


def test_saturated_consumers():
    """Messages waiting while every consumer's threads are all busy: add workers."""
    busy = (worker("w1", busy=2, threads=2), worker("w2", busy=1, threads=1))
    snap = look(channels=(channel(pending=4, consumers=("w1", "w2")),), workers=busy)
    got = diagnose(snap, NOW)
    assert codes(got) == [(WARNING, "saturated", "http.request")]
    assert "every worker consuming http.request is busy (2 workers)" in got[0].message
    one_free = (worker("w1", busy=1, threads=2), worker("w2", busy=1, threads=1))
    assert diagnose(replace(snap, workers=one_free), NOW) == []


def test_past_losses_without_a_previous_snapshot_are_info():
    """Cumulative expired/ChannelFull/dropped counts alone cannot tell recent from old: info."""
    snap = look(channels=(channel("chat", expired=5, full=2, dropped=1),), workers=(worker(),))
    got = diagnose(snap, NOW)
    assert codes(got) == [(INFO, "expired", "chat"), (INFO, "channel-full-refusals", "chat"),
                          (INFO, "group-send-dropped", "chat")]
    assert got[0].message == "5 messages on chat expired unread since the layer's counters started"
    assert healthy(got, strict=True)


def test_new_losses_since_the_previous_snapshot_are_warnings():
    """Given the previous snapshot, only what changed counts, over the time between."""
    before = look(channels=(channel("chat", expired=5, full=2),), workers=(worker(),))
    after = replace(before, taken_at=NOW + 2,
                    channels=(channel("chat", expired=8, full=2),))
    got = diagnose(after, NOW + 2, previous=before)
    assert codes(got) == [(WARNING, "expired", "chat")]
    assert got[0].message == "3 messages on chat expired unread in the last 2.0 s"
    assert diagnose(before, NOW, previous=before) == []


def test_a_counter_reset_counts_from_zero():
    """After a flush the counters restart: the new count is what happened since."""
    before = look(channels=(channel("chat", expired=9),), workers=(worker(),))
    after = replace(before, taken_at=NOW + 1, channels=(channel("chat", expired=2),))
    got = diagnose(after, NOW + 1, previous=before)
    assert got[0].message.startswith("2 messages on chat expired unread")


def test_consumer_errors_since_the_previous_snapshot():
    """A worker whose failed count grew is a warning pointing at its log."""
    before = look(workers=(worker(failed=1),))
    after = replace(before, taken_at=NOW + 5, workers=(worker(failed=4, heartbeat_at=NOW + 4),))
    got = diagnose(after, NOW + 5, previous=before)
    assert codes(got) == [(WARNING, "consumer-errors", "w1")]
    assert got[0].message == "worker w1: 3 consumers raised in the last 5.0 s (see its log)"


def test_a_layer_without_registry_is_a_warning_not_a_missing_worker():
    """Without the registry extension nobody can see workers: say so, do not claim none run."""
    snap = look(channels=(channel("jobs", 2, consumers=()),), has_registry=False)
    assert codes(diagnose(snap, NOW)) == [(WARNING, "no-registry", "")]


def test_errors_come_first_and_strict_counts_warnings():
    """Problems are sorted errors, warnings, info; ``strict`` makes warnings unhealthy."""
    snap = look(channels=(channel("chat", 80, expired=1), channel("orphan", 1, consumers=())),
                workers=(worker(),))
    got = diagnose(snap, NOW)
    assert [p.severity for p in got] == [ERROR, WARNING, INFO]
    warnings_only = [p for p in got if p.severity != ERROR]
    assert healthy(warnings_only) and not healthy(warnings_only, strict=True)


def test_notes_become_info():
    """What the snapshot could not read is reported as information."""
    snap = look(workers=(worker(),), notes=("the layer cannot list its groups",))
    assert codes(diagnose(snap, NOW)) == [(INFO, "note", "")]


def test_unconsumed_disconnect_notifications_are_information_only():
    """http.disconnect messages nobody consumes are not an error, however full the channel
    is: servers send them best effort and drop them when it is full."""
    snap = look(channels=(channel("http.disconnect", 100, consumers=()),),
                workers=(worker(),), servers=(server(),))
    got = diagnose(snap, NOW)
    assert codes(got) == [(INFO, "unconsumed-notifications", "http.disconnect")]
    consumed = look(channels=(channel("http.disconnect", 100),), workers=(worker(),))
    assert codes(diagnose(consumed, NOW)) == [(ERROR, "channel-full", "http.disconnect")]
