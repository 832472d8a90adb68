"""Turning a snapshot and its problems into what ``switchboard status`` prints.

Pure functions of their arguments (no clock, no terminal): ``render_text``
for people (``rq info``-style tables with a fill bar per channel) and
``render_json`` for scripts. Both are what the dashboard and tests read too.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from asgi_spec.ops.diagnose import ERROR, INFO, WARNING, Problem, healthy
from asgi_spec.ops.durations import duration
from asgi_spec.ops.snapshot import Snapshot

BAR_WIDTH = 10


def fill_bar(fill: float, width: int = BAR_WIDTH) -> str:
    """``███░░░░░░░`` for 0.3."""
    cells = min(max(round(fill * width), 1 if fill > 0 else 0), width)
    return "█" * cells + "░" * (width - cells)


def ago(seconds: float | None) -> str:
    """``0.4 s``, ``12 s``, ``5 min``, ``3.2 h``, ``2.0 d``; ``-`` when unknown."""
    return "-" if seconds is None else duration(seconds)


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]],
          right: Sequence[int] = (), indent: str = "  ") -> list[str]:
    """Aligned columns; the columns whose index is in ``right`` align right."""
    cells = [list(headers)] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        parts = [value.rjust(widths[i]) if i in right else value.ljust(widths[i])
                 for i, value in enumerate(row)]
        lines.append((indent + "  ".join(parts)).rstrip())
    return lines


def rates(snapshot: Snapshot, previous: Snapshot | None) -> dict[str, float]:
    """Messages sent per second on each channel since ``previous``."""
    if previous is None or snapshot.taken_at <= previous.taken_at:
        return {}
    span = snapshot.taken_at - previous.taken_at
    found = {}
    for channel in snapshot.channels:
        before = previous.channel(channel.name)
        if before is not None and channel.sent >= before.sent:
            found[channel.name] = (channel.sent - before.sent) / span
    return found


def _consumers(names: Sequence[str]) -> str:
    if not names:
        return "NONE"
    if len(names) <= 2:
        return ", ".join(names)
    return f"{len(names)} workers"


def render_text(snapshot: Snapshot, problems: list[Problem], now: float, *,
                previous: Snapshot | None = None, strict: bool = False) -> str:
    """The human-readable status report."""
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(snapshot.taken_at))
    out = [f"Switchboard status  {snapshot.layer}  {when}", ""]
    per_second = rates(snapshot, previous)
    rows = []
    for channel in snapshot.channels:
        handled, seconds = snapshot.consumer_seconds(channel.name)
        rows.append([
            channel.name, channel.pending,
            f"{fill_bar(channel.fill)} {channel.fill:4.0%}",
            ago(channel.oldest_age) if channel.pending else "-", channel.capacity,
            channel.sent,
            f"{per_second[channel.name]:.1f}" if channel.name in per_second else "-",
            f"{seconds / handled * 1000:.1f}" if handled else "-",
            channel.full, channel.expired, _consumers(channel.consumers),
        ])
    out.append(f"CHANNELS ({len(snapshot.channels)})")
    if rows:
        out += table(["NAME", "PENDING", "FULL", "OLDEST", "CAPACITY", "SENT", "PER S",
                      "AVG MS", "CHANNELFULL", "EXPIRED", "CONSUMERS"], rows,
                     right={1, 3, 4, 5, 6, 7, 8, 9})
    else:
        out.append("  (none known: no worker or server is registered; name some with "
                   "--channel)")
    totals = snapshot.totals
    if totals:
        out.append(f"  all channels: {totals.get('messages_pending', 0)} pending, "
                   f"{totals.get('messages_count', 0)} sent, "
                   f"{totals.get('channel_full_count', 0)} ChannelFull, "
                   f"{totals.get('messages_expired_count', 0)} expired, "
                   f"{totals.get('group_send_dropped_count', 0)} dropped from group sends")
    out.append("")
    if snapshot.groups is None:
        out.append("GROUPS (the layer cannot list them)")
    else:
        out.append(f"GROUPS ({len(snapshot.groups)})")
        for group in snapshot.groups:
            out.append(f"  {group.name}  {group.size} member{'s' if group.size != 1 else ''}")
            for member in group.members or ():
                out.append(f"    {member}")
    out.append("")
    workers = snapshot.workers
    states = [w.state_at(now) for w in workers]
    stale = states.count("stale")
    busy = sum(1 for w, state in zip(workers, states, strict=True) if w.busy and state != "stale")
    idle = states.count("idle")
    out.append(f"WORKERS ({len(workers) - stale} live: {busy} busy, {idle} idle"
               + (f"; {stale} stale)" if stale else ")"))
    if workers:
        out += table(
            ["NAME", "HOST", "PID", "THREADS", "STATE", "CURRENT", "PROCESSED", "FAILED",
             "HEARTBEAT", "UPTIME", "CHANNELS"],
            [[w.name, w.host, w.pid, w.threads, w.state_at(now),
              f"{w.current} ({ago(w.current_age(now))})" if w.current else "-",
              w.processed, w.failed, f"{ago(w.heartbeat_age(now))} ago"
              if w.heartbeat_at is not None else "-", ago(w.uptime(now)),
              "everything" if w.channels is None else ", ".join(w.channels)]
             for w in workers], right={2, 3, 6, 7})
    out.append("")
    servers = snapshot.servers
    gone = sum(1 for s in servers if s.stale(now))
    out.append(f"INTERFACE SERVERS ({len(servers) - gone} live"
               + (f"; {gone} stale)" if gone else ")"))
    if servers:
        out += table(
            ["NAME", "HOST", "PID", "HTTP", "WEBSOCKETS", "IN FLIGHT", "HEARTBEAT",
             "UPTIME", "LISTENING"],
            [[s.name, s.host, s.pid, s.http_connections, s.websockets,
              s.requests_in_flight, f"{ago(s.heartbeat_age(now))} ago"
              if s.heartbeat_at is not None else "-", ago(s.uptime(now)),
              ", ".join(s.listening) or "-"] for s in servers], right={2, 3, 4, 5})
    out.append("")
    out.append("PROBLEMS")
    labels = {ERROR: "ERROR  ", WARNING: "WARNING", INFO: "info   "}
    for problem in problems:
        out.append(f"  {labels.get(problem.severity, problem.severity)}  {problem.message}")
    if not problems:
        out.append("  none")
    out.append("")
    out.append(verdict(problems, strict=strict))
    return "\n".join(out) + "\n"


def verdict(problems: list[Problem], *, strict: bool = False) -> str:
    """``HEALTHY`` or ``UNHEALTHY (1 error, 2 warnings)``."""
    errors = sum(p.severity == ERROR for p in problems)
    warnings = sum(p.severity == WARNING for p in problems)
    counts = f"{errors} error{'s' if errors != 1 else ''}, " \
             f"{warnings} warning{'s' if warnings != 1 else ''}"
    return f"{'HEALTHY' if healthy(problems, strict=strict) else 'UNHEALTHY'} ({counts})"


def status_dict(snapshot: Snapshot, problems: list[Problem], now: float, *,
                previous: Snapshot | None = None, strict: bool = False) -> dict[str, Any]:
    """The JSON document of ``switchboard status --json``."""
    found = snapshot.to_dict(now)
    per_second = rates(snapshot, previous)
    for channel in found["channels"]:
        channel["per_second"] = per_second.get(channel["name"])
        handled, seconds = snapshot.consumer_seconds(channel["name"])
        channel["consumer_seconds_avg"] = seconds / handled if handled else None
    found["now"] = now
    found["healthy"] = healthy(problems, strict=strict)
    found["problems"] = [problem.to_dict() for problem in problems]
    return found


def render_json(snapshot: Snapshot, problems: list[Problem], now: float, *,
                previous: Snapshot | None = None, strict: bool = False) -> str:
    return json.dumps(status_dict(snapshot, problems, now, previous=previous, strict=strict),
                      sort_keys=True) + "\n"
