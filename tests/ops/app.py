"""A tiny routing for the operations tests' real worker processes: every HTTP request
is answered ``ok``; ``/slow`` sleeps a second first."""

from __future__ import annotations

import time
from typing import Any

from worker.routing import route


def answer(message: Any) -> None:
    if message.get("path") == "/slow":
        time.sleep(1.0)
    message.reply_channel.send({"status": 200, "headers": [[b"content-type", b"text/plain"]],
                                "content": b"ok"})


channel_routing = [route("http.request", answer)]
