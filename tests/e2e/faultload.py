"""Load and bookkeeping for the fault tests that count what a fault cost.

How this works: each ``TallyLoad`` thread sends ``GET /tally?id=<name>-<n>`` one after
another on a keep-alive connection (TCP to a port, or a UNIX socket), a little apart, and
sorts every outcome by what the client saw:

* ``served`` -- 200 whose JSON names this very request (and the worker ``pid``);
* ``refused`` -- 503 with a body saying the layer is unavailable or no worker consumes;
* ``lost`` -- 504 "did not respond" (the request went in, no answer came in time);
* anything else is a *failure*: a hang past the client timeout, an empty reply or a
  reset, another status, an answer to another request, bytes nobody asked for.

``Ledger`` then joins these outcomes with the tally the workers wrote (``TALLY <id>
<pid>`` lines, see ``tests/e2e/tally_app.py``): a request handled twice is a duplicate;
a lost request that no worker handled was lost in the layer, one that a worker handled
lost its answer on the way back. It also measures the window of a fault: from the fault
to the first request after which every client is served again.
"""

from __future__ import annotations

import http.client
import json
import re
import select
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from tests.e2e.clients import CLIENT_TIMEOUT

_TALLY_LINE = re.compile(r"^TALLY (\S+) (\d+)$", re.MULTILINE)


class UnixHTTPConnection(http.client.HTTPConnection):
    """``http.client`` over a UNIX socket (the server's ``-u`` listener)."""

    def __init__(self, path: str, timeout: float = CLIENT_TIMEOUT) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.unix_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def tcp(port: int) -> Callable[[], http.client.HTTPConnection]:
    return lambda: http.client.HTTPConnection("127.0.0.1", port, timeout=CLIENT_TIMEOUT)


def unix(path: str | Path) -> Callable[[], http.client.HTTPConnection]:
    return lambda: UnixHTTPConnection(str(path))


@dataclass
class Outcome:
    ident: str
    began: float  # time.monotonic() when the request was sent
    ended: float
    kind: str  # served, refused, lost, failed
    status: int | None
    body: bytes
    pid: int | None = None  # the worker that served it


class TallyLoad(threading.Thread):
    """One client: sequential ``/tally`` requests on a keep-alive connection, sorted."""

    #: Seconds between two requests of one client: a light, bounded load.
    pace = 0.02

    def __init__(self, name: str, connect: Callable[[], http.client.HTTPConnection],
                 timeout: float = CLIENT_TIMEOUT) -> None:
        super().__init__(daemon=True, name=f"load-{name}")
        self.client = name
        self.connect = connect
        self.timeout = timeout
        self.stopping = threading.Event()
        self.outcomes: list[Outcome] = []
        self.failures: list[str] = []

    def count(self, kind: str, since: float = 0.0) -> int:
        return sum(1 for o in self.outcomes if o.kind == kind and o.began >= since)

    def run(self) -> None:
        conn = self.connect()
        n = 0
        while not self.stopping.is_set():
            n += 1
            ident = f"{self.client}-{n}"
            if conn.sock is not None and select.select([conn.sock], [], [], 0)[0]:
                if conn.sock.recv(1, socket.MSG_PEEK):
                    self.failures.append(f"unrequested bytes before {ident}")
                conn.close()
            began = time.monotonic()
            try:
                conn.request("GET", f"/tally?id={ident}")
                response = conn.getresponse()
                body = response.read()
                status = response.status
            except Exception as exc:
                ended = time.monotonic()
                self.failures.append(f"{ident} after {ended - began:.2f} s: "
                                     f"{type(exc).__name__}: {exc}")
                self.outcomes.append(Outcome(ident, began, ended, "failed", None, b""))
                conn.close()
                self.stopping.wait(self.pace)
                continue
            self.outcomes.append(self.classify(ident, began, status, body))
            if response.will_close:
                conn.close()
            self.stopping.wait(self.pace)
        conn.close()

    def classify(self, ident: str, began: float, status: int, body: bytes) -> Outcome:
        outcome = Outcome(ident, began, time.monotonic(), "failed", status, body)
        if status == 200:
            try:
                answer = json.loads(body)
            except ValueError:
                answer = {}
            if answer.get("id") == ident:
                outcome.kind, outcome.pid = "served", answer.get("pid")
            else:
                self.failures.append(f"{ident} got another answer: {body[:200]!r}")
        elif status == 503 and (b"unavailable" in body or b"no worker" in body):
            outcome.kind = "refused"
        elif status == 504 and b"did not respond" in body:
            outcome.kind = "lost"
        else:
            self.failures.append(f"{ident}: unexpected {status} {body[:200]!r}")
        return outcome


def tallies(paths: Iterable[Path]) -> Counter[str]:
    """How many times each request id was handled, from the workers' stdout files."""
    handled: Counter[str] = Counter()
    for path in paths:
        if path.exists():
            handled.update(m.group(1) for m in _TALLY_LINE.finditer(path.read_text()))
    return handled


def handlers(paths: Iterable[Path]) -> dict[str, list[int]]:
    """The PIDs of the workers that handled each request id, from their stdout files."""
    found: dict[str, list[int]] = {}
    for path in paths:
        if path.exists():
            for match in _TALLY_LINE.finditer(path.read_text()):
                found.setdefault(match.group(1), []).append(int(match.group(2)))
    return found


class Ledger:
    """The outcomes of some clients joined with what the workers handled."""

    def __init__(self, loads: list[TallyLoad], handled: Counter[str]) -> None:
        self.loads = loads
        self.handled = handled
        self.outcomes = sorted((o for load in loads for o in load.outcomes),
                               key=lambda o: o.began)
        self.kinds = Counter(o.kind for o in self.outcomes)
        self.failures = [f for load in loads for f in load.failures]

    @property
    def duplicates(self) -> dict[str, int]:
        return {ident: n for ident, n in self.handled.items() if n > 1}

    @property
    def unasked(self) -> set[str]:
        """Handled ids that no client of this ledger sent (must be none)."""
        return set(self.handled) - {o.ident for o in self.outcomes}

    def lost_in_layer(self) -> list[str]:
        """Requests answered 504 whose message no worker ever handled."""
        return [o.ident for o in self.outcomes if o.kind == "lost" and o.ident not in self.handled]

    def answers_lost(self) -> list[str]:
        """Requests answered 504 that a worker did handle: the reply was lost."""
        return [o.ident for o in self.outcomes if o.kind == "lost" and o.ident in self.handled]

    def refused_but_handled(self) -> list[str]:
        return [o.ident for o in self.outcomes if o.kind == "refused" and o.ident in self.handled]

    def served_unhandled(self) -> list[str]:
        """200s that no tally line backs (must be none)."""
        return [o.ident for o in self.outcomes
                if o.kind == "served" and o.ident not in self.handled]

    def between(self, start: float, end: float) -> Counter[str]:
        """Outcomes of the requests sent in ``[start, end)``, by kind."""
        return Counter(o.kind for o in self.outcomes if start <= o.began < end)

    def settled_at(self, load: TallyLoad, since: float) -> float | None:
        """When ``load``'s requests were served again for good: the start of the first
        request sent after ``since`` from which on every request was served."""
        settled = None
        for outcome in load.outcomes:
            if outcome.began < since:
                continue
            if outcome.kind == "served":
                settled = settled if settled is not None else outcome.began
            else:
                settled = None
        return settled

    def recovered_after(self, since: float) -> float | None:
        """Seconds from ``since`` until every client was served for good (``None``: some
        client never was)."""
        times = [self.settled_at(load, since) for load in self.loads]
        if any(t is None for t in times):
            return None
        return max(times) - since  # type: ignore[type-var, operator]

    def check_clean(self) -> None:
        """No client saw a failure; no request was handled twice or without being asked;
        every 200 is backed by a tally line."""
        assert not self.failures, self.failures[:10]
        assert not self.duplicates, f"requests handled more than once: {self.duplicates}"
        assert not self.unasked, f"handled ids no client sent: {sorted(self.unasked)[:10]}"
        assert not self.served_unhandled(), self.served_unhandled()[:10]

    def slowest(self) -> float:
        return max((o.ended - o.began for o in self.outcomes), default=0.0)
