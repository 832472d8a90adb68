"""The e2e consumers plus one that keeps a tally, for the fault tests that count losses.

Run as ``runworker tests.e2e.tally_app:channel_routing`` from the repository root.

``GET /tally?id=X`` -> 200 JSON ``{"id": X, "pid": <worker pid>}``. Before it answers,
the consumer writes the line ``TALLY X <pid>`` to its process's stdout (one write), so a
test can read, from the workers' own output files, which requests were handled and how
many times each: a request whose message a worker never received was lost in the layer;
one handled twice was delivered twice. Everything else is ``tests.e2e.app``.
"""

from __future__ import annotations

import os

from tests.e2e.app import channel_routing as e2e_routing
from tests.e2e.app import query, reply_json
from worker.message import Message
from worker.routing import route

#: The start of a tally line in a worker's stdout.
TALLY = "TALLY"


def http_tally(message: Message) -> None:
    ident = query(message).get("id", "")
    # One write(2) per line, on a file opened for appending: lines written by two
    # threads at once never interleave (print() writes the newline separately).
    os.write(1, f"{TALLY} {ident} {os.getpid()}\n".encode())
    reply_json(message, {"id": ident})


channel_routing = [
    route("http.request", http_tally, path=r"^/tally$"),
    *e2e_routing,
]
