"""The HTTP/2 adapter: Twisted's ``H2Connection``, each stream one ``ChannelRequest``.

How this works. Over TLS, a client that negotiated ``h2`` by ALPN gets a
``SwitchboardH2Connection`` instead of the HTTP/1.1 channel:
``SwitchboardChannel`` looks at the transport's ``negotiatedProtocol`` when
the first bytes arrive (the handshake is done by then) and hands the
connection over. It is Twisted's ``H2Connection`` -- framing and HPACK (the
``h2`` library), flow control, multiplexing, its defences against reset
floods and control-frame floods -- with these changes:

* each stream's request is an ``H2ChannelRequest``: a ``ChannelRequest``, so
  every stream becomes its own ``http.request`` (``http_version`` "2") with
  its own reply channel, streamed response, ``body_channel``, timeouts and
  ``http.disconnect``, exactly as on HTTP/1.1. What acts on the connection
  there acts on the stream here: a limit is answered on the stream (413,
  431, 408) and the connection goes on; a response that must be cut resets
  its stream (RST_STREAM), not the connection;
* the message gets the headers as received (order and duplicates kept,
  ``host`` from ``:authority``); Twisted keeps only a dictionary;
* frames that arrive for a stream whose response is already complete are
  absorbed (Twisted would raise ``KeyError`` and drop the connection with
  every other stream on it); a response that completes before its request
  body asks the client to stop sending (RST_STREAM NO_ERROR, RFC 9113 8.1);
* connection-specific response headers (``Connection``, ``Keep-Alive``,
  ``Upgrade``, ``Transfer-Encoding``, ``TE``) are dropped: HTTP/2 forbids them;
* it is one of the server's HTTP connections: ``--limit-concurrency`` counts
  it once (past the limit its streams get 503 and it closes once they are
  done), the sweep closes it after ``--keep-alive-timeout`` without streams,
  and while draining its new streams get 503 and it closes with GOAWAY once
  its last stream is done;
* its send loop is its own (``_sendPrioritisedData``): see below.

Sending and flow control. Responses are queued per stream (Twisted's
``H2Stream``); each turn of the send loop writes up to ``FRAMES_PER_TURN``
DATA frames, taking the streams with data in turn, each frame only within
the peer's windows, and hands the transport everything in one write -- the
response heads written since the last turn, and a response's end on its
last DATA frame. So a stream whose client stops reading waits (parked, out
of the rotation, until a WINDOW_UPDATE or SETTINGS frame makes room) while
the other streams go on. Twisted's own loop sends one frame per reactor
turn, picked by a priority tree whose upkeep grows with the open streams,
sends each end as one more empty frame, and keeps picking a stream whose
window is shut, sending nothing, at full CPU until the peer makes room;
RFC 9113 deprecates the priority signals, so they are ignored here. The
layer cannot slow a worker down, so unsent output is bounded as on HTTP/1.1
(``_output``): a stream whose unsent data stays past ``--max-output-buffer``
for a sweep interval, or passes four times that on a write, is reset; a
connection whose transport stays that full (the client reads nothing) is cut.

WebSocket stays on HTTP/1.1 (RFC 8441 WebSockets over HTTP/2 are not
offered): browsers open an HTTP/1.1 connection for it, which ALPN allows.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import h2.errors
import h2.exceptions
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionAborted
from twisted.python.failure import Failure
from twisted.web import http
from twisted.web._http2 import H2Connection

from interface_server._http import Header, body_too_large
from interface_server._output import HARD_FACTOR, OutputWatch, pending_output
from interface_server.http_request import ChannelRequest

if TYPE_CHECKING:
    from interface_server.server import Server

logger = logging.getLogger("interface_server.http")

#: DATA frames sent per reactor turn, at most (one per ready stream in turn),
#: before the reactor's other work gets its turn.
FRAMES_PER_TURN = 16

#: Response headers HTTP/2 forbids (RFC 9113 8.2.2); ``te`` is allowed only as
#: ``trailers``, which means nothing in a response.
CONNECTION_SPECIFIC = (b"connection", b"keep-alive", b"proxy-connection",
                       b"transfer-encoding", b"upgrade", b"te")


def request_headers(headers: Sequence[tuple[bytes, bytes]]) -> list[Header]:
    """A stream's header block as the message's headers.

    Pseudo-headers are dropped except ``:authority``, which becomes ``host``
    (first) unless a ``host`` header was sent too; the rest keep their order
    and duplicates. (The ``h2`` library has already joined split cookies.)
    """
    fields = [(bytes(name), bytes(value)) for name, value in headers
              if not name.startswith(b":")]
    authority = [value for name, value in headers if name == b":authority"]
    if authority and not any(name == b"host" for name, _ in fields):
        fields.insert(0, (b"host", bytes(authority[0])))
    return fields


class H2ChannelRequest(ChannelRequest):
    """A ``ChannelRequest`` on one HTTP/2 stream (``channel`` is Twisted's ``H2Stream``)."""

    def __init__(self, stream: Any, connection: SwitchboardH2Connection,
                 headers: Sequence[tuple[bytes, bytes]]) -> None:
        self.connection = connection
        self.rejection: tuple[int, str] | None = None
        self.registered = False  # the connection knows the stream: it can be answered
        self.body_complete = False  # the client ended its side of the stream
        self.body_received_at: float | None = None
        super().__init__(stream)
        self.raw_headers = request_headers(headers)
        config = self.server.config
        if len(self.raw_headers) > config.max_headers:
            self.refuse(431, f"the request has more than {config.max_headers} header fields")
        elif sum(len(n) + len(v) for n, v in self.raw_headers) > config.max_header_size:
            self.refuse(431, f"the request head is larger than {config.max_header_size} bytes")

    def find_server(self, channel: Any) -> Server:
        return self.connection.server

    # -- reading (called by the stream) -------------------------------------------

    def gotLength(self, length: int | None) -> None:
        limit = self.server.config.max_body_size
        if body_too_large(length, limit):
            self.refuse(413, f"the request body is larger than {limit} bytes")
            return
        self.body_received_at = self.server.now() if length != 0 else None
        http.Request.gotLength(self, length)  # (ChannelRequest's rejects a whole connection)

    def handleContentChunk(self, data: bytes) -> None:
        if self.rejection is not None or self.content is None:
            return
        self.body_size += len(data)
        limit = self.server.config.max_body_size
        if body_too_large(self.body_size, limit):
            self.refuse(413, f"the request body is larger than {limit} bytes")
            return
        self.body_received_at = self.server.now()
        http.Request.handleContentChunk(self, data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        self.body_complete = True
        self.body_received_at = None
        if self.rejection is not None or self.finished or self._disconnected:
            return
        super().requestReceived(command, path, version)

    def refuse(self, status: int, detail: str) -> None:
        """Answer ``status`` on this stream before the request is processed."""
        if self.rejection is not None or self.response_started:
            return
        self.rejection = (status, detail)
        self.body_received_at = None
        self.server.stats[f"http_rejected_{status}"] += 1
        logger.debug("refused an HTTP/2 request from %s with %s: %s", self.client, status,
                     detail)
        if self.registered:
            self._answer_refusal()

    def registered_with_connection(self) -> None:
        self.registered = True
        if self.rejection is not None:
            self._answer_refusal()

    def _answer_refusal(self) -> None:
        assert self.rejection is not None
        stream = self.channel
        self.method = stream.command or b"-"
        self.uri = stream.path or b"-"
        self.path = self.uri.split(b"?", 1)[0]
        self.clientproto = b"HTTP/2"
        self.respond_error(*self.rejection)

    # -- writing ------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self.startedWriting:
            super().write(data)
            return
        for name in CONNECTION_SPECIFIC:
            self.responseHeaders.removeHeader(name)
        try:
            super().write(data)
        except h2.exceptions.ProtocolError as exc:  # a header HTTP/2 cannot carry
            self.server.stats["bad_replies"] += 1
            logger.error("cannot send the response to %s %s over HTTP/2: %s",
                         self.method.decode("latin-1"), self.message_path, exc)
            self.abort()

    def connection_over_limit(self) -> bool:
        return self.connection.over_limit

    def output_over_limit(self) -> bool:
        """This stream's unsent data (plus the connection's) is past ``HARD_FACTOR`` x
        --max-output-buffer: cut it on the write (the sweep cuts at 1 x, see
        ``SwitchboardH2Connection.check_timeout``)."""
        stream = getattr(self, "channel", None)
        if stream is None:
            return False
        unsent = self.connection.unsent_bytes(stream.streamID)
        return unsent + pending_output(self.connection.transport) > \
            HARD_FACTOR * self.server.config.max_output_buffer

    def abort(self) -> None:
        """Reset this stream (RST_STREAM); the connection and its other streams go on."""
        if self.finished or self._disconnected:
            return
        self.aborted = True
        stream = self.channel
        if stream is not None:
            self.connection.reset(stream.streamID)
        self.connectionLost(Failure(ConnectionAborted("the server reset the stream")))


class _NoPriorities:
    """Stands in for Twisted's priority tree, which the send loop does not consult.

    Twisted keeps the tree up to date on every stream's start, end and write; its
    upkeep grows with the streams open (removing one scans its siblings).
    """

    def insert_stream(self, stream_id: int, depends_on: int | None = None,
                      weight: int = 16, exclusive: bool = False) -> None:
        pass

    def reprioritize(self, stream_id: int, depends_on: int | None = None,
                     weight: int = 16, exclusive: bool = False) -> None:
        pass

    def remove_stream(self, stream_id: int) -> None:
        pass

    def block(self, stream_id: int) -> None:
        pass

    def unblock(self, stream_id: int) -> None:
        pass


class SwitchboardH2Connection(H2Connection):
    """Twisted's HTTP/2 connection, serving ``H2ChannelRequest``s for one ``Server``."""

    def __init__(self, server: Server, factory: Any) -> None:
        super().__init__(reactor=server.reactor)
        self.priority = _NoPriorities()
        self.server = server
        self.factory = factory
        self.requestFactory = self._new_request
        self.callLater = server.reactor.callLater
        self.over_limit = False
        self.idle_since: float | None = None
        self.requests: dict[int, H2ChannelRequest] = {}
        self._headers: Sequence[tuple[bytes, bytes]] = ()
        self._closing = False
        self._lost = False
        self._parked: set[int] = set()  # streams waiting for the peer's window
        self._last_served = 0  # the send loop's round robin resumes after this stream
        self._turn_scheduled = False
        self._awaiting_transport = False
        self.output = OutputWatch(server.config.max_output_buffer)  # the whole connection's
        self._streams_over: set[int] = set()  # streams over the limit at the last sweep

    def connectionMade(self) -> None:
        super().connectionMade()
        self.idle_since = self.server.now()
        self.server.http_channels.add(self)
        self.over_limit = self.server.over_concurrency_limit()

    def _new_request(self, stream: Any, queued: object = False) -> H2ChannelRequest:
        request = H2ChannelRequest(stream, self, self._headers)
        self.requests[stream.streamID] = request
        return request

    # -- the send loop (see the module docstring) -----------------------------------

    def _sendPrioritisedData(self, *args: Any) -> None:
        """One turn of the send loop: up to ``FRAMES_PER_TURN`` DATA frames, one per
        ready stream in turn, in one write; then the reactor's other work goes first.

        This replaces Twisted's loop, which sends one frame per reactor turn and asks
        its priority tree which stream (a cost that grows with the streams waiting
        for their workers), sends a response's end as an extra empty frame a turn
        later, and keeps picking a stream whose flow-control window is shut, sending
        nothing, at full CPU, until the peer makes room. Here: streams with data
        queued take turns (RFC 9113 deprecates the priority signals: the tree is
        replaced by ``_NoPriorities``), the end rides on the last DATA frame, and a
        stream with no window left is parked until the peer makes room.
        """
        self._turn_scheduled = False
        if not self._stillProducing or self._closing:
            return
        if self._consumerBlocked is not None:  # the transport is full: wait for it
            if not self._awaiting_transport:
                self._awaiting_transport = True
                self._consumerBlocked.addCallback(self._transport_ready)
            return
        self.resetTimeout()
        ready = self._ready_streams()
        if not ready:  # wait for a write (Twisted's writeDataToStream fires this)
            self._flush()  # (response heads written since the last turn)
            if self._sendingDeferred is not None:
                return  # (already waiting)
            self._sendingDeferred = Deferred()
            self._sendingDeferred.addCallback(self._next_turn)
            return
        sent = 0
        try:
            while ready and sent < FRAMES_PER_TURN:
                for stream_id in list(ready):
                    if sent >= FRAMES_PER_TURN or self._closing or self._lost:
                        break
                    self._last_served = stream_id
                    sent += 1
                    if not self._send_frame(stream_id):
                        ready.remove(stream_id)
        finally:
            self._flush()
        self._next_turn()

    def _transport_ready(self, _: object = None) -> None:
        self._awaiting_transport = False
        self._sendPrioritisedData()

    def _next_turn(self, _: object = None) -> None:
        """Run a turn soon: after the code writing now is done (so a response's end
        joins its data, and the writes of many streams share one turn)."""
        if not self._turn_scheduled and not self._closing and not self._lost:
            self._turn_scheduled = True
            self._reactor.callLater(0, self._sendPrioritisedData)

    def writeHeaders(self, version: bytes, code: bytes, reason: bytes, headers: Any,
                     streamID: int) -> None:
        """A response head goes out with the next turn, in the same write as the start
        of its body (Twisted writes it at once: one more TLS record and send)."""
        try:
            self.conn.send_headers(streamID, [(b":status", code), *headers])
        except h2.exceptions.StreamClosedError:
            return  # the client reset the stream meanwhile
        self._next_turn()

    def _ready_streams(self) -> list[int]:
        """Streams with something to send, starting after the one served last."""
        ready = [stream_id for stream_id, queue in self._outboundStreamQueues.items()
                 if queue and stream_id not in self._parked]
        later = [stream_id for stream_id in ready if stream_id > self._last_served]
        return later + ready[: len(ready) - len(later)]

    def _send_frame(self, stream_id: int) -> bool:
        """Send the stream's next frame; False if it has nothing more it can send now."""
        queue = self._outboundStreamQueues.get(stream_id)
        if not queue:
            return False
        try:
            return self._send_next(stream_id, queue)
        except h2.exceptions.H2Error as exc:  # the state machine refused: end this stream
            logger.warning("HTTP/2 stream %d could not be sent on: %r", stream_id, exc)
            self.reset(stream_id)
            return False

    def _send_next(self, stream_id: int, queue: Any) -> bool:
        if not isinstance(queue[0], bytes):  # the end of the response
            queue.popleft()
            self.conn.end_stream(stream_id)
            self._requestDone(stream_id)
            return False
        window = self.conn.local_flow_control_window(stream_id)
        if window <= 0:  # parked until the peer makes room (see _unpark_streams)
            self._parked.add(stream_id)
            return False
        data = queue.popleft()
        room = min(self.conn.max_outbound_frame_size, window)
        if len(data) > room:
            queue.appendleft(data[room:])
            data = data[:room]
        if queue and not isinstance(queue[0], bytes):  # that was the last of the body
            queue.popleft()
            self.conn.send_data(stream_id, data, end_stream=True)
            self._requestDone(stream_id)
            return False
        self.conn.send_data(stream_id, data)
        if not queue:
            return False
        if self.remainingOutboundWindow(stream_id) <= 0:
            self.streams[stream_id].flowControlBlocked()
        return True

    def _flush(self) -> None:
        pending = self.conn.data_to_send()
        if pending and self.transport is not None and not self._lost:
            self.transport.write(pending)

    def _unpark_streams(self) -> None:
        """Streams the peer made room for (WINDOW_UPDATE, SETTINGS) are scheduled again."""
        woken = False
        for stream_id in list(self._parked):
            try:
                room = self.stream_active(stream_id) and \
                    self.conn.local_flow_control_window(stream_id) > 0
            except h2.exceptions.H2Error:
                room = False
            if room or not self.stream_active(stream_id):
                self._parked.discard(stream_id)
            woken = woken or room
        if woken and self._sendingDeferred is not None:
            waiting, self._sendingDeferred = self._sendingDeferred, None
            waiting.callback(None)

    def dataReceived(self, data: bytes) -> None:
        super().dataReceived(data)
        if self._parked and not self._lost:
            self._unpark_streams()

    # -- events from the h2 state machine ----------------------------------------

    def _requestReceived(self, event: Any) -> None:
        self._headers = event.headers
        try:
            super()._requestReceived(event)
        finally:
            self._headers = ()
        self.idle_since = None
        request = self.requests.get(event.stream_id)
        if request is not None:
            request.registered_with_connection()

    def _requestDataReceived(self, event: Any) -> None:
        if self.stream_active(event.stream_id):
            super()._requestDataReceived(event)
            return
        # The response is complete or the stream was reset: free the windows, drop the data.
        self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        self._tryToWriteControlData()

    def _requestEnded(self, event: Any) -> None:
        if self.stream_active(event.stream_id):
            super()._requestEnded(event)

    def _requestAborted(self, event: Any) -> None:
        if self.stream_active(event.stream_id):
            super()._requestAborted(event)

    def _requestDone(self, streamID: int) -> None:
        request = self.requests.pop(streamID, None)
        super()._requestDone(streamID)
        if (request is not None and request.finished and not request.body_complete
                and not self._lost):
            try:  # answered before the body ended: the client may stop sending it
                self.conn.reset_stream(streamID, h2.errors.ErrorCodes.NO_ERROR)
            except h2.exceptions.H2Error:
                pass
            else:
                self._tryToWriteControlData()
        if not self.streams:
            self.idle_since = self.server.now()
            if self.server.draining or self.over_limit:
                self.close()

    # -- the server's view of a connection ----------------------------------------

    def stream_active(self, stream_id: int) -> bool:
        return self._streamIsActive(stream_id)

    def unsent_bytes(self, stream_id: int) -> int:
        """Response bytes queued on ``stream_id`` and not yet sent."""
        if not self.stream_active(stream_id):
            return 0
        try:
            return max(self.conn.local_flow_control_window(stream_id)
                       - self.remainingOutboundWindow(stream_id), 0)
        except h2.exceptions.H2Error:
            return 0

    def reset(self, stream_id: int) -> None:
        """Cut one stream's response (RST_STREAM INTERNAL_ERROR: it is incomplete),
        unless the whole connection is going anyway."""
        if self._lost or self._closing or not self.stream_active(stream_id):
            return
        try:
            self.conn.reset_stream(stream_id, h2.errors.ErrorCodes.INTERNAL_ERROR)
        except h2.exceptions.H2Error:
            return
        if self._tryToWriteControlData():
            self._requestDone(stream_id)

    @property
    def idle(self) -> bool:
        """No stream open (safe to close when draining)."""
        return not self.streams

    def check_timeout(self, now: float) -> None:
        config = self.server.config
        transport = self.transport
        if transport is not None:  # the client reads nothing at all (see ``_output``)
            if self.output.linger_over(bool(transport.disconnecting), now):
                transport.abortConnection()
                return
            if self.output.cut_on_sweep(transport):
                self.server.stats["slow_readers_cut"] += 1
                logger.info("cut an HTTP/2 connection from %s: more than %d bytes stayed "
                            "unread (--max-output-buffer)", transport.getPeer(),
                            self.output.limit)
                transport.abortConnection()
                return
        self._cut_slow_streams()
        for request in list(self.requests.values()):
            if (request.body_received_at is not None
                    and now - request.body_received_at >= config.body_timeout):
                request.refuse(408, f"no part of the request body arrived for "
                               f"{config.body_timeout:g} s")
        if self.streams:
            return
        if self.server.draining or (self.idle_since is not None
                                    and now - self.idle_since >= config.keep_alive_timeout):
            self.close()

    def _cut_slow_streams(self) -> None:
        """Reset the streams whose unsent data stayed past --max-output-buffer for a
        whole sweep interval (their clients keep their windows shut)."""
        limit = self.server.config.max_output_buffer
        over = {stream_id for stream_id in self.requests
                if self.unsent_bytes(stream_id) > limit}
        for stream_id in sorted(over & self._streams_over):
            request = self.requests.get(stream_id)
            if request is None:
                continue
            self.server.stats["slow_readers_cut"] += 1
            logger.info("reset HTTP/2 stream %d of %s: more than %d bytes stayed unsent "
                        "(--max-output-buffer)", stream_id, self.transport.getPeer(), limit)
            request.abort()
            over.discard(stream_id)
        self._streams_over = over

    def close(self) -> None:
        """Say GOAWAY (no error) and close the connection, once."""
        if self._closing or self._lost or self.transport is None:
            return
        self._closing = True
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self.conn.close_connection()
        self._tryToWriteControlData()
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure, _cancelTimeouts: bool = True) -> None:
        self._lost = True
        self.server.http_channels.discard(self)
        super().connectionLost(reason, _cancelTimeouts=_cancelTimeouts)
