"""Consumers for the hostile-input suite, run by a real ``runworker``.

Run as ``runworker tests.hostile.app:channel_routing`` from the repository root.

* ``/big?chunks=N&size=S`` -> a streamed ``application/octet-stream`` body of N
  chunks of S bytes each, every chunk sent as soon as it is made (the slow-read
  case: a client that never reads it);
* everything else -> the end-to-end consumers (``tests.e2e.app``): ``/echo``
  describes the request, ``GET /`` is ``hello``, ``/ws/echo/`` echoes frames.
"""

from __future__ import annotations

from tests.e2e import app as e2e
from worker.consumers import http_response
from worker.message import Message
from worker.routing import route


def http_big(message: Message) -> None:
    params = e2e.query(message)
    chunks, size = int(params.get("chunks", "8")), int(params.get("size", "65536"))
    reply = message.reply_channel
    reply.send(http_response(200, {"content-type": "application/octet-stream"}, b"",
                             more_content=True), immediately=True)
    block = b"x" * size
    for index in range(chunks):
        reply.send({"content": block, "more_content": index < chunks - 1}, immediately=True)


channel_routing = [
    route("http.request", http_big, path=r"^/big$"),
    *e2e.channel_routing,
]
