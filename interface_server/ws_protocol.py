"""The Autobahn adapter: a WebSocket upgraded from an HTTP request, spoken as channel messages.

How this works. ``upgrade_request`` takes a ``ChannelRequest`` that asked for
``Upgrade: websocket``, builds a ``SwitchboardWebSocketProtocol`` and hands it
the request's transport, replaying the request head (Autobahn parses and
validates the handshake itself). Autobahn then calls ``onConnect``, which
sends ``websocket.connect`` and returns a Deferred: the handshake is held until
the application's reply accepts (101) or rejects (403), the connect timeout
passes (403), or the layer refuses the message (503).

Once open: every message, empty ones too, becomes ``websocket.receive`` with
the next ``order``; the close becomes ``websocket.disconnect`` with the code
and the last ``order``. The server's layer I/O sends messages in the order it is
given them, so they reach the layer in order. Replies routed here by the server are turned
into actions by ``_websocket.interpret_reply``. A message over
``max_ws_message_size`` is closed with 1009 by Autobahn (``failByDrop`` off:
a close frame, not a TCP drop). Pings, the connect timeout and the lifetime
limit are decided by the server's sweep calling ``check_timeout``.

Two changes to Autobahn's behaviour with hostile peers: a connection whose
client does not read what is written to it (pongs to a ping flood, or
messages) is dropped (``_output.OutputWatch``: past ``--max-output-buffer``
for a sweep, or four times that on a write); and when the peer answers a
close the server started -- including the close 1002/1007 answering an
invalid close frame -- the connection is closed after flushing that close
frame (Autobahn aborted it, so the client saw a reset instead of the code),
and aborted by the sweep if the flush does not finish.

Four of Autobahn's per-frame costs are skipped (measured in
docs/benchmarks.rst): the debug lines it formats on every read and send,
debug or not; the observable ``message`` event it fires per message (nobody
listens); its C masker for small frames (``_frame_mask``); and, for a read
that is one whole small message in one frame (``_frame_mask.lone_frame``) on
an open socket with nothing half-read, its frame state machine: the message
goes to ``onMessage`` at once, with the same checks and counters (a property
test compares the two paths on generated frame streams).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from asgi_spec.exceptions import ChannelFull, LayerUnavailable, MessageFormatError, MessageTooLarge
from asgi_spec.formats import WEBSOCKET_CONNECT, WEBSOCKET_DISCONNECT, WEBSOCKET_RECEIVE
from interface_server import _frame_mask
from interface_server import _websocket as ws
from interface_server._accesslog import AccessRecord
from interface_server._http import (
    ClientError,
    RequestParts,
    connection_scope,
    header_value,
    render_error,
)
from interface_server._output import OutputWatch
from interface_server._timeouts import Due, websocket_due

if TYPE_CHECKING:
    from interface_server.http_request import ChannelRequest
    from interface_server.server import Server

logger = logging.getLogger("interface_server.websocket")
_frame_mask.install()

OPEN = WebSocketServerProtocol.STATE_OPEN


class SwitchboardWebSocketProtocol(WebSocketServerProtocol):
    server: Server
    parts: RequestParts

    def __init__(self) -> None:
        super().__init__()
        self.reply_channel: str | None = None
        self.order = ws.OrderCounter()
        self.handshake: Deferred[Any] | None = None
        self.connect_sent = False
        self.path = ""
        self.offered: list[str] = []
        self.client: list[Any] | None = None
        self.connect_started_at = 0.0
        self.opened_at: float | None = None
        self.last_received_at = 0.0
        self.ping_sent_at: float | None = None
        self.arrived_at = time.time()
        self.reported = False
        self._peer_closing = False  # inside onCloseFrame
        self.output: OutputWatch

    # -- handshake -----------------------------------------------------------

    def onConnect(self, request: object) -> Deferred[Any]:
        server, config = self.server, self.server.config
        self.connect_started_at = self.last_received_at = server.now()
        try:
            scope = connection_scope(self.parts, websocket=True, trusted=(
                config.trusted_proxies if config.proxy_headers else None))
        except ClientError as exc:
            raise ConnectionDeny(exc.status, exc.detail) from None
        self.path, self.client = scope["path"], scope["client"]
        self.offered = ws.offered_subprotocols(scope["headers"])
        if server.draining:
            raise ConnectionDeny(503, "the server is shutting down; retry")
        self.reply_channel = server.router.add(self)
        server.websockets.add(self)
        message = ws.connect_message(scope, reply_channel=self.reply_channel,
                                     root_path=config.root_path, subprotocols=self.offered)
        handshake = self.handshake = Deferred()
        server.consumer_available(WEBSOCKET_CONNECT).addCallback(self._send_connect, message)
        return handshake  # (already fired if the answer came at once)

    def _send_connect(self, available: bool | None, message: dict[str, Any]) -> None:
        if self.handshake is None:
            return  # the client left while we looked for a worker
        if available is False:
            self.server.stats["websocket_no_worker"] += 1
            self.deny(503, "no worker is consuming the websocket.connect channel; "
                      "start one with `runworker`")
            return
        if self.server.replies_unreachable:  # its answer could not come back
            self.server.stats["layer_unavailable"] += 1
            self.deny(503, "the channel layer is unavailable; retry shortly")
            return
        self.connect_sent = True
        self.server.send_to_layer(WEBSOCKET_CONNECT, message).addErrback(self._connect_failed)

    def _connect_failed(self, failure: Failure) -> None:
        self.connect_sent = False
        status, detail = self.server.layer_error_answer(failure, WEBSOCKET_CONNECT)
        self.deny(status, detail)

    def deny(self, status: int, detail: str) -> None:
        """Reject the held handshake with ``status`` (the body says ``detail``)."""
        handshake, self.handshake = self.handshake, None
        if handshake is not None:
            self._log(status)
            handshake.errback(ConnectionDeny(status, detail))

    def sendHttpErrorResponse(self, code: int, reason: str,
                              responseHeaders: Any = None) -> None:
        extra = [(str(name).encode("latin-1"), str(value).encode("latin-1"))
                 for name, value in responseHeaders or ()]  # Sec-WebSocket-Version
        self.sendData(render_error(code, reason, extra))

    def onOpen(self) -> None:
        self.opened_at = self.server.now()
        self._log(101)

    # -- frames from the client ------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        self.last_received_at = self.server.now()
        self.ping_sent_at = None
        # Autobahn's own dataReceived only adds a debug log line whose arguments it
        # formats on every read, debug or not (~4% of the server's CPU on an echo).
        # (The HTTP channel in front corks what this read makes: one send.)
        if not self._lone_message(data):
            self._dataReceived(data)
        self._check_output()  # pongs pile up when a ping flood's sender does not read

    def _lone_message(self, data: bytes) -> bool:
        """Deliver ``data`` if it is one whole small message in one frame and Autobahn
        would do nothing else with it: open, nothing buffered or half-read, no limit
        it breaks, valid UTF-8 for a text, no per-frame logging, timing or
        ping-timeout duty, masks applied. ``False``: nothing was done, Autobahn
        parses it."""
        if (self.state != OPEN or self.data or self.current_frame is not None
                or self.inside_message or self.failedByMe or self.logOctets
                or self.logFrames or self.trackedTimings or self.autoPingTimeoutCall
                or not self.applyMask):
            return False
        frame = _frame_mask.lone_frame(data)
        if frame is None:
            return False
        is_binary, payload = frame
        size = len(payload)
        if 0 < self.maxMessagePayloadSize < size or 0 < self.maxFramePayloadSize < size:
            return False
        if not is_binary and self.utf8validateIncoming:
            try:
                payload.decode("utf-8")
            except UnicodeDecodeError:
                return False
        stats = self.trafficStats
        stats.incomingOctetsWireLevel += len(data)
        stats.incomingOctetsWebSocketLevel += size
        stats.incomingOctetsAppLevel += size
        stats.incomingWebSocketFrames += 1
        stats.incomingWebSocketMessages += 1
        self._onMessage(payload, is_binary)
        return True

    def onMessageEnd(self) -> None:
        """Autobahn's ``onMessageEnd`` without firing its observable ``message`` event:
        nothing listens here, and the firing made Deferreds for every message."""
        if not self.failedByMe:
            payload = b"".join(self.message_data)
            if self.trackedTimings:
                self.trackedTimings.track("onMessage")
            self._onMessage(payload, self.message_is_binary)
        self.message_data = None

    # -- frames to the client --------------------------------------------------

    def sendData(self, data: bytes, sync: bool = False, chopsize: int | None = None) -> None:
        """Autobahn's ``sendData`` for the common case (no chopping, nothing queued,
        not synchronous) without its debug line, whose arguments -- the method's
        name styled for a terminal -- it formats on every send, debug or not: about
        11% of the server's CPU on an echo. The other cases are Autobahn's own."""
        if sync or (chopsize and chopsize > 0) or self.send_queue:
            super().sendData(data, sync, chopsize)
            return
        self.transport.write(data)
        if self.state == OPEN:
            self.trafficStats.outgoingOctetsWireLevel += len(data)
        elif self.state in (self.STATE_CONNECTING, self.STATE_PROXY_CONNECTING):
            self.trafficStats.preopenOutgoingOctetsWireLevel += len(data)
        if self.logOctets:
            self.logTxOctets(data, False)

    def _check_output(self) -> None:
        """Drop the connection at once when far too much output is left unread."""
        if self.state != self.STATE_CLOSED and self.transport is not None and \
                self.output.cut_on_write(self.transport):
            self._cut_slow_reader()

    def _cut_slow_reader(self) -> None:
        self.server.stats["slow_readers_cut"] += 1
        logger.info("dropped WebSocket %s: the client left more than %d bytes unread "
                    "(--max-output-buffer)", self.path, self.output.limit)
        self.wasNotCleanReason = "the client does not read (--max-output-buffer)"
        self.dropConnection(abort=True)

    def onCloseFrame(self, code: int | None, reasonRaw: bytes | None) -> bool | None:
        self._peer_closing = True
        try:
            return super().onCloseFrame(code, reasonRaw)  # type: ignore[arg-type]
        finally:
            self._peer_closing = False

    def dropConnection(self, abort: bool = False) -> None:
        if abort and self._peer_closing:
            # The peer answered our close: flush our close frame, then close (Autobahn
            # aborts, losing a close frame sent just before, e.g. 1002 for a bad close
            # frame). A peer that then reads nothing is aborted by the sweep.
            abort = False
        super().dropConnection(abort)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self.state != OPEN or self.reply_channel is None:
            return
        message = ws.receive_message(self.reply_channel, self.path, payload, isBinary,
                                     self.order.next())
        self.server.send_to_layer(WEBSOCKET_RECEIVE, message).addErrback(self._receive_failed)

    def _receive_failed(self, failure: Failure) -> None:
        if failure.check(ChannelFull):
            self.server.stats["websocket_receive_full"] += 1
            self.close(ws.CLOSE_TRY_AGAIN_LATER, "the application is not keeping up")
        elif failure.check(MessageTooLarge):
            self.close(ws.CLOSE_TOO_BIG, "message too large for the channel layer")
        elif failure.check(LayerUnavailable):
            logger.error("channel layer unavailable; closing a WebSocket with 1013: %s",
                         failure.value)
            self.close(ws.CLOSE_TRY_AGAIN_LATER, "the channel layer is unavailable")
        else:
            logger.error("sending websocket.receive failed: %s", failure.getTraceback())
            self.close(ws.CLOSE_INTERNAL_ERROR, "internal error")

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if self.reported:
            return
        self.reported = True
        self.handshake = None
        self.server.websockets.discard(self)
        if self.reply_channel is not None:
            self.server.router.discard(self.reply_channel)
        if not self.connect_sent:
            return
        if getattr(self, "closedByMe", False) and getattr(self, "localCloseCode", None):
            code = self.localCloseCode
        elif wasClean and code is None:
            code = 1005  # a close frame without a code
        message = ws.disconnect_message(self.reply_channel or "", self.path, code,
                                        self.order.next())
        self.server.send_to_layer(WEBSOCKET_DISCONNECT, message).addErrback(
            self.server.dropped_send, WEBSOCKET_DISCONNECT)

    # -- replies (called by the server's reply loop) ---------------------------

    def handle_reply(self, message: dict[str, Any]) -> None:
        handshaking = self.handshake is not None
        try:
            actions = ws.interpret_reply(message, handshaking=handshaking)
        except MessageFormatError as exc:
            self.server.stats["bad_replies"] += 1
            logger.error("invalid reply on %s for WebSocket %s: %s", self.reply_channel,
                         self.path, exc)
            if handshaking:
                self.deny(500, "the application sent an invalid reply "
                          "(the server log names the field)")
            else:
                self.close(ws.CLOSE_INTERNAL_ERROR, "invalid reply from the application")
            return
        for action in actions:
            if isinstance(action, ws.Accept):
                handshake, self.handshake = self.handshake, None
                if handshake is not None:
                    protocol = ws.choose_subprotocol(
                        self.offered, self.server.config.ws_protocols, action.subprotocol)
                    handshake.callback((protocol, {}))
            elif isinstance(action, ws.Reject):
                self.deny(action.status, "the application rejected the connection")
            elif isinstance(action, ws.Send):
                if self.state == OPEN:
                    self.sendMessage(action.payload, isBinary=action.is_binary)
                    self._check_output()
            elif isinstance(action, ws.Close):
                self.close(action.code)

    def close(self, code: int, reason: str = "") -> None:
        """Start the closing handshake with ``code`` (any valid server close code)."""
        if self.state == OPEN:
            self.sendCloseFrame(code=code, reasonUtf8=reason.encode("utf-8")[:123] or None)

    def close_for_shutdown(self) -> None:
        if self.handshake is not None:
            self.deny(503, "the server is shutting down; retry")
        else:
            self.close(ws.CLOSE_GOING_AWAY, "server shutting down")

    def check_timeout(self, now: float) -> None:
        config = self.server.config
        if self.handshake is None and self.state != OPEN:
            if self.transport is not None and self.output.linger_over(
                    self.state == self.STATE_CLOSED, now):
                self.transport.abortConnection()  # closed, but it cannot flush
            return
        if self.state == OPEN and self.output.cut_on_sweep(self.transport):
            self._cut_slow_reader()
            return
        due = websocket_due(
            now, handshaking=self.handshake is not None,
            connect_started_at=self.connect_started_at, opened_at=self.opened_at,
            last_received_at=self.last_received_at, ping_sent_at=self.ping_sent_at,
            connect_timeout=config.websocket_connect_timeout,
            lifetime=config.websocket_timeout, ping_interval=config.ping_interval,
            ping_timeout=config.ping_timeout)
        if due is Due.CONNECT_TIMEOUT:
            self.server.stats["websocket_connect_timeouts"] += 1
            self.deny(403, f"the application did not accept the connection within "
                      f"{config.websocket_connect_timeout:g} s")
        elif due is Due.EXPIRED:
            self.close(ws.CLOSE_NORMAL, "connection lifetime reached")
        elif due is Due.PING:
            self.ping_sent_at = now
            self.sendPing()
        elif due is Due.PING_TIMEOUT:
            self.server.stats["websocket_ping_timeouts"] += 1
            self.wasNotCleanReason = "no pong within --ping-timeout"
            self.dropConnection(abort=True)

    def _log(self, status: int) -> None:
        if not self.server.records_access:
            return
        headers = self.parts.headers
        user_agent = header_value([(n.lower(), v) for n, v in headers], b"user-agent") or b""
        self.server.log_access(AccessRecord(
            timestamp=self.arrived_at,
            client=self.client[0] if self.client else None,
            method="WEBSOCKET", path=self.parts.target.decode("latin-1"), http_version="1.1",
            status=status, size=0, duration=max(self.server.now() - self.connect_started_at, 0),
            user_agent=user_agent.decode("latin-1"), protocol="websocket",
            client_port=self.client[1] if self.client else None))


class SwitchboardWebSocketFactory(WebSocketServerFactory):
    protocol = SwitchboardWebSocketProtocol
    noisy = False

    def __init__(self, server: Server) -> None:
        super().__init__(server=None, reactor=server.reactor)  # no Server: header
        self.switchboard = server  # (``server`` is Autobahn's Server-header string)
        size = server.config.max_ws_message_size
        self.setProtocolOptions(
            allowedOrigins=ws.origin_patterns(server.config.ws_allowed_origins),
            allowNullOrigin=True,  # sandboxed pages and file:// send "null"
            maxMessagePayloadSize=size, maxFramePayloadSize=size,
            failByDrop=False,  # protocol errors and 1009 get a close frame, not a TCP drop
            openHandshakeTimeout=0,  # the server's connect timeout decides (403)
            closeHandshakeTimeout=5,
            autoPingInterval=0,  # the server's sweep pings
        )

    def buildProtocol(self, addr: object) -> SwitchboardWebSocketProtocol:
        protocol = SwitchboardWebSocketProtocol()
        protocol.factory = self
        protocol.server = self.switchboard
        protocol.output = OutputWatch(self.switchboard.config.max_output_buffer)
        return protocol


def upgrade_request(request: ChannelRequest, parts: RequestParts,
                    factory: SwitchboardWebSocketFactory) -> SwitchboardWebSocketProtocol:
    """Move ``request``'s connection over to a new WebSocket protocol."""
    protocol = factory.buildProtocol(request.client)
    protocol.parts = parts
    head = [request.method + b" " + request.uri + b" HTTP/1.1"]
    head += [name + b": " + value for name, value in parts.headers]
    request.channel.upgrade(protocol, b"\r\n".join(head) + b"\r\n\r\n")
    return protocol
