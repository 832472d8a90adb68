"""What an HTTP/2 client (the ``h2`` library's state machine) saw, per stream.

``Streams.handle(conn, events)`` records responses, data, ends and resets,
and gives flow-control credit back for received data: on the connection
always, on the stream unless it is in ``starved`` (or ``ack`` is off), so a
test can leave one stream's window closed while the others go on.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import h2.config
import h2.connection
import h2.events


def client_connection(**config: Any) -> h2.connection.H2Connection:
    """A client connection, preface sent; ``config``: more ``H2Configuration`` options."""
    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding=None, **config))
    conn.initiate_connection()
    return conn


def request_headers(path: bytes, method: bytes = b"GET", authority: bytes = b"localhost",
                    extra: tuple[tuple[bytes, bytes], ...] | list[Any] = ()
                    ) -> list[tuple[bytes, bytes]]:
    return [(b":method", method), (b":scheme", b"https"), (b":authority", authority),
            (b":path", path), *extra]


@dataclass
class Stream:
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    data: bytearray = field(default_factory=bytearray)
    frames: int = 0
    ended: bool = False
    reset: int | None = None

    @property
    def status(self) -> int:
        return int(dict(self.headers)[b":status"])

    @property
    def done(self) -> bool:
        return self.ended or self.reset is not None


class Streams(defaultdict[int, Stream]):
    def __init__(self, ack: bool = True) -> None:
        super().__init__(Stream)
        self.ack = ack
        self.starved: set[int] = set()
        self.goaway: h2.events.ConnectionTerminated | None = None
        self.order: list[int] = []  # the stream of each DATA frame, as they came

    def handle(self, conn: h2.connection.H2Connection, events: list[Any]) -> None:
        for event in events:
            if isinstance(event, h2.events.ResponseReceived):
                self[event.stream_id].headers = list(event.headers)
            elif isinstance(event, h2.events.DataReceived):
                stream = self[event.stream_id]
                stream.data += event.data
                stream.frames += 1
                self.order.append(event.stream_id)
                size = event.flow_controlled_length
                if not size:
                    continue
                if self.ack and event.stream_id not in self.starved:
                    conn.acknowledge_received_data(size, event.stream_id)
                else:  # credit the connection only: the stream's window stays shut
                    conn.increment_flow_control_window(size)
            elif isinstance(event, h2.events.StreamEnded):
                self[event.stream_id].ended = True
            elif isinstance(event, h2.events.StreamReset):
                self[event.stream_id].reset = event.error_code
            elif isinstance(event, h2.events.ConnectionTerminated):
                self.goaway = event
