"""The uvicorn peer: a raw ASGI 3 application with the benchmark's three endpoints.

Run by ``tests/bench/servers.py`` as ``uvicorn --app-dir tests/bench/peers
raw_asgi:app --loop uvloop --http httptools`` from ``.bench/venv-uvicorn``.
No framework, no channel layer: the floor that any Python server stands on.

* ``GET /`` -> 200 ``hello`` (anything else -> 404);
* ``/ws/echo/`` -> every frame is sent back;
* ``/ws/group/`` -> the socket joins the in-process group ``bench`` before it
  is accepted, and every frame it sends goes to every member, one by one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]

_TEXT_PLAIN = [(b"content-type", b"text/plain")]
GROUP: set[Send] = set()


async def _http(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    ok = scope["method"] == "GET" and scope["path"] == "/"
    body = b"hello" if ok else b"not found"
    headers = [*_TEXT_PLAIN, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200 if ok else 404, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _frame(event: dict[str, Any]) -> dict[str, Any]:
    if event.get("text") is not None:
        return {"type": "websocket.send", "text": event["text"]}
    return {"type": "websocket.send", "bytes": event.get("bytes") or b""}


async def _websocket(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    path = scope["path"]
    if path not in ("/ws/echo/", "/ws/group/"):
        await receive()  # websocket.connect
        await send({"type": "websocket.close"})
        return
    broadcast = path == "/ws/group/"
    try:
        while True:
            event = await receive()
            kind = event["type"]
            if kind == "websocket.connect":
                if broadcast:
                    GROUP.add(send)
                await send({"type": "websocket.accept"})
            elif kind == "websocket.receive":
                frame = _frame(event)
                if not broadcast:
                    await send(frame)
                    continue
                for member in list(GROUP):
                    try:
                        await member(frame)
                    except Exception:  # a member that has gone: drop it
                        GROUP.discard(member)
            else:  # websocket.disconnect
                return
    finally:
        GROUP.discard(send)


async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    if scope["type"] == "http":
        await _http(scope, receive, send)
    elif scope["type"] == "websocket":
        await _websocket(scope, receive, send)
    elif scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
