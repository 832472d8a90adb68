"""``diagnose(snapshot, now)``: what is wrong with a deployment, said plainly.

A pure function: the same snapshot, ``now`` and thresholds always give the
same problems, so each rule is tested on hand-built snapshots. Each
``Problem`` has a severity, a stable ``code`` (for scripts and alerts), the
thing it is about, and one sentence an operator can act on.

Severities: ``error`` -- requests fail or messages are lost now (the status
command exits non-zero); ``warning`` -- trouble is coming or something looks
stuck; ``info`` -- worth knowing (for example, counters of past losses when
there is no earlier snapshot to tell whether they are recent).

Given the ``previous`` snapshot (``switchboard status --watch`` passes it),
counters are judged by what changed since then: "5 messages on chat expired
unread in the last 2 s" is a warning, an old total is not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from asgi_spec import registry
from asgi_spec.ops.durations import duration
from asgi_spec.ops.snapshot import HTTP_REQUEST, ChannelStatus, Snapshot

ERROR, WARNING, INFO = "error", "warning", "info"
_ORDER = {ERROR: 0, WARNING: 1, INFO: 2}

#: Channels an application may leave unconsumed: interface servers send these
#: notifications best effort and drop them when the channel is full.
OPTIONAL_CHANNELS = frozenset({"http.disconnect"})


@dataclass(frozen=True)
class Thresholds:
    """When a number becomes a problem. The defaults suit the default layer options."""

    #: A queue this full (pending / capacity) is a warning, and an error at ``fill_error``.
    fill_warning: float = 0.75
    fill_error: float = 0.9
    #: The oldest pending message waited this share of the layer's expiry: warning.
    age_warning: float = 0.5
    #: Used when the layer's expiry is unknown (seconds).
    default_expiry: float = 60.0
    #: A heartbeat older than this many heartbeat intervals is stale (warning), and the
    #: process no longer counts as live: processes beat five times per interval, so a
    #: killed one shows up within one interval, long before its registration expires ...
    stale_heartbeats: float = registry.STALE_AFTER
    #: ... and older than this many, an error (the process is hung or gone).
    dead_heartbeats: float = 2.0
    #: Heartbeat interval assumed when a process does not publish its own (seconds).
    default_heartbeat_interval: float = registry.HEARTBEAT_INTERVAL
    #: One message handled for longer than this (seconds) looks stuck: warning.
    long_message: float = 30.0


DEFAULT_THRESHOLDS = Thresholds()


@dataclass(frozen=True)
class Problem:
    severity: str  # "error" | "warning" | "info"
    code: str  # e.g. "no-consumer", "channel-full", "stale-heartbeat"
    subject: str  # the channel, worker, server or group it is about ("" for all)
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"severity": self.severity, "code": self.code, "subject": self.subject,
                "message": self.message}


def healthy(problems: list[Problem], *, strict: bool = False) -> bool:
    """No error (with ``strict``: no warning either)."""
    bad = {ERROR, WARNING} if strict else {ERROR}
    return not any(problem.severity in bad for problem in problems)


def _s(n: float, word: str) -> str:
    """``1 message``, ``3 messages``, ``2 replies``."""
    if n == 1:
        return f"{n:g} {word}"
    return f"{n:g} {word[:-1]}ies" if word.endswith("y") else f"{n:g} {word}s"


def _seconds(value: float) -> str:
    """``value`` seconds as problems write it: ``12 s``, ``5 min``, ``55.6 h`` (never days)."""
    return duration(value, days=False)


def diagnose(snapshot: Snapshot, now: float, *, previous: Snapshot | None = None,
             thresholds: Thresholds = DEFAULT_THRESHOLDS) -> list[Problem]:
    """The problems ``snapshot`` shows at ``now``, errors first."""
    found: list[Problem] = []
    add = found.append
    t = thresholds

    def live(worker: Any) -> bool:
        age = worker.heartbeat_age(now)
        interval = worker.heartbeat_interval or t.default_heartbeat_interval
        return age is None or age <= t.stale_heartbeats * interval

    live_workers = [worker for worker in snapshot.workers if live(worker)]
    if not snapshot.has_registry:
        add(Problem(WARNING, "no-registry", "",
                    "the layer has no registry extension: no one can tell which workers run"))
    elif not snapshot.workers:
        add(Problem(ERROR, "no-workers", "",
                    "no live worker is registered: nothing consumes any channel "
                    "(start one with `runworker`)"))
    elif not live_workers:
        add(Problem(ERROR, "no-workers", "",
                    "no live worker: every registered worker's heartbeat is stale, so nothing "
                    "consumes any channel (start one with `runworker`)"))
    if snapshot.has_registry and snapshot.servers and live_workers \
            and not any(worker.consumes(HTTP_REQUEST) for worker in live_workers):
        add(Problem(ERROR, "no-consumer", HTTP_REQUEST,
                    f"no live worker consumes {HTTP_REQUEST}: interface servers answer "
                    "every HTTP request with 503"))
    expiry = snapshot.expiry or t.default_expiry
    late = max(now - snapshot.taken_at, 0.0)
    for channel in snapshot.channels:
        _channel_problems(channel, snapshot, previous, expiry, late, t, add)
    for worker in snapshot.workers:
        interval = worker.heartbeat_interval or t.default_heartbeat_interval
        _heartbeat_problem("worker", worker.name, worker.heartbeat_age(now), interval, t, add)
        age = worker.current_age(now)
        if age is not None and age > t.long_message:
            add(Problem(WARNING, "long-message", worker.name,
                        f"worker {worker.name} has been handling a message on "
                        f"{worker.current} for {_seconds(age)}"))
        if previous is not None and worker.failed is not None:
            before = next((w for w in previous.workers if w.name == worker.name), None)
            if before is not None and before.failed is not None \
                    and worker.failed > before.failed:
                add(Problem(WARNING, "consumer-errors", worker.name,
                            f"worker {worker.name}: "
                            f"{_s(worker.failed - before.failed, 'consumer')} raised in the "
                            f"last {_seconds(snapshot.taken_at - previous.taken_at)} "
                            "(see its log)"))
    for server in snapshot.servers:
        interval = server.heartbeat_interval or t.default_heartbeat_interval
        _heartbeat_problem("interface server", server.name, server.heartbeat_age(now),
                           interval, t, add)
    for note in snapshot.notes:
        if "registry" not in note:  # said above already
            add(Problem(INFO, "note", "", note))
    found.sort(key=lambda p: _ORDER.get(p.severity, 3))
    return found


def _heartbeat_problem(kind: str, name: str, age: float | None, interval: float,
                       t: Thresholds, add: Any) -> None:
    if age is None:
        return
    if age > t.dead_heartbeats * interval:
        add(Problem(ERROR, "stale-heartbeat", name,
                    f"{kind} {name} heartbeat {_seconds(age)} stale (heartbeat interval "
                    f"{_seconds(interval)}): hung or gone"))
    elif age > t.stale_heartbeats * interval:
        add(Problem(WARNING, "stale-heartbeat", name,
                    f"{kind} {name} heartbeat {_seconds(age)} stale (heartbeat interval "
                    f"{_seconds(interval)}): killed or hung, no longer counted as live"))


def _channel_problems(channel: ChannelStatus, snapshot: Snapshot, previous: Snapshot | None,
                      expiry: float, late: float, t: Thresholds, add: Any) -> None:
    name = channel.name
    what = "reply" if channel.process_specific else "message"
    if name in OPTIONAL_CHANNELS and not channel.consumers:
        if channel.pending:
            add(Problem(INFO, "unconsumed-notifications", name,
                        f"{_s(channel.pending, 'notification')} wait on {name}, which no "
                        "worker consumes (fine unless your application wants them; "
                        "servers drop them when the channel is full)"))
        return
    if channel.pending and not channel.consumers and snapshot.has_registry:
        reader = ("its interface server is gone" if channel.process_specific
                  else "no live worker consumes it")
        add(Problem(ERROR, "no-consumer", name,
                    f"{_s(channel.pending, what)} waiting on {name} and {reader}"))
    fill = channel.fill
    if fill >= t.fill_error:
        add(Problem(ERROR, "channel-full", name,
                    f"channel {name} {fill:.0%} full ({channel.pending}/{channel.capacity}): "
                    "senders get ChannelFull"))
    elif fill >= t.fill_warning:
        add(Problem(WARNING, "channel-filling", name,
                    f"channel {name} {fill:.0%} full ({channel.pending}/{channel.capacity})"))
    age = channel.oldest_age + late if channel.pending else 0.0
    if channel.pending and age >= t.age_warning * expiry:
        add(Problem(WARNING, "old-messages", name,
                    f"the oldest message on {name} has waited {_seconds(age)} of its "
                    f"{_seconds(expiry)} expiry"))
    if channel.pending and channel.consumers and not channel.process_specific:
        workers = [w for w in snapshot.workers if w.name in channel.consumers]
        if workers and all(w.busy is not None and w.threads is not None
                           and w.busy >= w.threads for w in workers):
            add(Problem(WARNING, "saturated", name,
                        f"every worker consuming {name} is busy "
                        f"({_s(len(workers), 'worker')}) and "
                        f"{_s(channel.pending, 'message')} wait: add workers or threads"))
    before = previous.channel(name) if previous is not None else None
    span = (f"in the last {_seconds(snapshot.taken_at - previous.taken_at)}"
            if previous is not None else "")
    for count, old, code, sentence in (
            (channel.expired, before.expired if before else None, "expired",
             "{n} on {name} expired unread"),
            (channel.full, before.full if before else None, "channel-full-refusals",
             "{n} to {name} refused with ChannelFull"),
            (channel.dropped, before.dropped if before else None, "group-send-dropped",
             "{n} for {name} dropped from group sends (the channel was full)")):
        if previous is not None and before is not None:
            delta = count - old if count >= old else count  # counters reset by flush
            if delta > 0:
                add(Problem(WARNING, code, name,
                            sentence.format(n=_s(delta, what), name=name) + f" {span}"))
        elif count > 0:
            add(Problem(INFO, code, name,
                        sentence.format(n=_s(count, what), name=name)
                        + " since the layer's counters started"))
