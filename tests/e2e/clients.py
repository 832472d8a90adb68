"""Small real clients for the end-to-end tests: http.client requests with their timing, and
the reader of what the slow consumer reports on ``e2e.observe``."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

#: Longest a client waits for any answer: past it, the server "hung".
CLIENT_TIMEOUT = 15.0


@dataclass
class Reply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    elapsed: float

    def header(self, name: str) -> str | None:
        values = self.all(name)
        return values[0] if values else None

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def json(self) -> Any:
        return json.loads(self.body)


def request(port: int, method: str, path: str, body: bytes | Iterable[bytes] | None = None,
            headers: Mapping[str, str] | None = None, timeout: float = CLIENT_TIMEOUT,
            connection: http.client.HTTPConnection | None = None) -> Reply:
    """One request on a new connection (or on ``connection``); the whole response."""
    conn = connection or http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    began = time.monotonic()
    try:
        chunked = body is not None and not isinstance(body, bytes)
        conn.request(method, path, body=body, headers=dict(headers or {}),
                     encode_chunked=chunked)
        response = conn.getresponse()
        data = response.read()
        return Reply(response.status, response.getheaders(), data, time.monotonic() - began)
    finally:
        if connection is None:
            conn.close()


def get(port: int, path: str, **kwargs: Any) -> Reply:
    return request(port, "GET", path, **kwargs)


def observed(layer: Any, ids: Iterable[str], timeout: float = CLIENT_TIMEOUT) -> dict[str, int]:
    """Wait until the slow consumer has reported each of ``ids`` on ``e2e.observe``:
    ``{id: pid of the worker running it}``. Reports for other ids are skipped."""
    from tests.e2e.app import OBSERVE

    wanted, found = set(ids), {}
    deadline = time.monotonic() + timeout
    while wanted - set(found):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"the slow consumer never reported {sorted(wanted - set(found))}")
        channel, message = layer.receive([OBSERVE], block=True, timeout=min(left, 1.0))
        if channel is not None and message["id"] in wanted:
            found[message["id"]] = message["pid"]
    return found
