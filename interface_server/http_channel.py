"""The twisted.web adapter: Twisted's HTTP/1.1 channel, with its limits answered.

How this works. ``SwitchboardChannel`` is Twisted's ``HTTPChannel`` (keep-alive,
pipelined requests served in order, chunked request bodies), with these changes:

* limits are answered, not dropped: an over-long request line gets 414, too
  many or too large headers 431, a malformed request 400 (with a body), each
  followed by a close (Twisted closes silently or answers a bare 400);
  conflicting framing (Content-Length with Transfer-Encoding, or two
  Content-Lengths) is among the 400s;
* ``Expect: 100-continue`` is answered only when the body is acceptable;
* header (slowloris) and keep-alive timeouts are decided by the server's
  sweep (``check_timeout``), not by a timer per connection;
* ``upgrade`` hands the transport to an Autobahn protocol, after which bytes
  flow straight to it.

The request itself -- message, body, replies -- is ``http_request.ChannelRequest``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from twisted.python.failure import Failure
from twisted.web import http

from interface_server._http import render_error
from interface_server._timeouts import Due, http_connection_due
from interface_server.http_request import ChannelRequest

if TYPE_CHECKING:
    from interface_server.server import Server

logger = logging.getLogger("interface_server.http")


class SwitchboardChannel(http.HTTPChannel):
    """Twisted's HTTP/1.1 channel with answered limits, sweep timeouts and upgrades."""

    requestFactory = ChannelRequest
    server: Server

    def __init__(self) -> None:
        super().__init__()
        self.rejected = False
        self.over_limit = False  # accepted past --limit-concurrency: answer 503
        self.upgraded: Any = None
        self.head_started_at: float | None = None
        self.idle_since: float | None = None
        self._in_headers = False
        self._head_bytes = 0

    def connectionMade(self) -> None:
        super().connectionMade()
        self.idle_since = self.server.now()
        self.server.http_channels.add(self)
        self.over_limit = self.server.over_concurrency_limit()

    def dataReceived(self, data: bytes) -> None:
        if self.upgraded is not None:
            self.upgraded.dataReceived(data)
            return
        if self.rejected:
            return
        if not self._handlingRequest and self.head_started_at is None and data:
            self.head_started_at = self.server.now()
            self.idle_since = None
        super().dataReceived(data)

    def lineReceived(self, line: bytes) -> None:
        if self.rejected:
            return
        config = self.server.config
        if not self._in_headers:
            if line:
                if len(line) > config.max_request_line:
                    self.reject(414, f"the request line is longer than "
                                f"{config.max_request_line} bytes")
                    return
                self._in_headers = True
                self._head_bytes = len(line)
        elif not line:
            self._in_headers = False
            self.head_started_at = None
        else:
            self._head_bytes += len(line)
            if self._head_bytes > config.max_header_size:
                self.reject(431, f"the request head is larger than {config.max_header_size} bytes")
                return
        super().lineReceived(line)

    def lineLengthExceeded(self, line: bytes) -> None:
        if self._in_headers:
            self.reject(431, f"a header line is longer than {self.MAX_LENGTH} bytes")
        else:
            self.reject(414, f"the request line is longer than "
                        f"{self.server.config.max_request_line} bytes")

    def headerReceived(self, line: bytes) -> bool:
        request = self.requests[-1]
        if len(request.raw_headers) >= self.server.config.max_headers:
            self.reject(431, f"the request has more than {self.server.config.max_headers} "
                        "header fields")
            return False
        if not super().headerReceived(line):
            return False
        name, _, value = line.partition(b":")
        request.raw_headers.append((name, value.strip(b" \t")))
        return True

    def allHeadersReceived(self) -> None:
        request = self.requests[-1]
        self.persistent = self.checkPersistence(request, self._version)
        request.gotLength(self.length)
        if self.rejected:
            return
        expect = request.requestHeaders.getRawHeaders(b"expect")
        if (expect and expect[0].lower() == b"100-continue" and self._version == b"HTTP/1.1"
                and self.length != 0):
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def allContentReceived(self) -> None:
        if not self.rejected:
            super().allContentReceived()

    def rawDataReceived(self, data: bytes) -> None:
        if not self.rejected:
            super().rawDataReceived(data)

    def _respondToBadRequestAndDisconnect(self) -> None:
        self.reject(400, "the request is malformed")

    def reject(self, status: int, detail: str) -> None:
        """Answer ``status`` before any request could, and close the connection."""
        if self.rejected:
            return
        self.rejected = True
        self.server.stats[f"http_rejected_{status}"] += 1
        logger.debug("rejected a request from %s with %s: %s",
                     self.transport.getPeer(), status, detail)
        self.transport.write(render_error(status, detail))
        self.close()

    def requestDone(self, request: http.Request) -> None:
        self.idle_since = self.server.now()
        if self.server.draining:
            self.persistent = False
        super().requestDone(request)

    def check_timeout(self, now: float) -> None:
        config = self.server.config
        due = http_connection_due(now, head_started_at=self.head_started_at,
                                  idle_since=self.idle_since,
                                  header_timeout=config.header_timeout,
                                  keep_alive_timeout=config.keep_alive_timeout)
        if due is Due.HEADER_TIMEOUT:
            self.reject(408, f"the request head was not complete within "
                        f"{config.header_timeout:g} s")
        elif due is Due.IDLE_TIMEOUT:
            self.idle_since = None
            self.close()

    def close(self) -> None:
        """Close the connection once (a second loseConnection would upset the producer)."""
        if self.transport is not None and not self.transport.disconnecting:
            self.loseConnection()

    @property
    def idle(self) -> bool:
        """No request in progress (safe to close when draining)."""
        return not self._handlingRequest and self.head_started_at is None

    def upgrade(self, protocol: Any, handshake: bytes) -> None:
        """Hand the transport to ``protocol``; replay the handshake and any early bytes."""
        self.upgraded = protocol
        self.server.http_channels.discard(self)
        for request in self.requests:  # nothing will answer them: free their memory now
            if request.content is not None:
                request.content.close()
        self.requests = []
        early, self._dataBuffer = b"".join(self._dataBuffer), []
        self._networkProducer.resumeProducing()
        protocol.makeConnection(self.transport)
        protocol.dataReceived(handshake + early)

    def connectionLost(self, reason: Failure) -> None:
        self.server.http_channels.discard(self)
        if self.upgraded is not None:
            self.upgraded.connectionLost(reason)
            return
        super().connectionLost(reason)


class SwitchboardHTTPFactory(http.HTTPFactory):
    """Builds ``SwitchboardChannel``s for one ``Server`` (no HTTP/2, no Twisted log)."""

    protocol = SwitchboardChannel  # type: ignore[assignment]
    noisy = False

    def __init__(self, server: Server) -> None:
        super().__init__(timeout=None, reactor=server.reactor)  # type: ignore[arg-type]
        self.server = server

    def buildProtocol(self, addr: object) -> SwitchboardChannel:  # type: ignore[override]
        channel = SwitchboardChannel()
        channel.factory = self
        channel.server = self.server
        channel.callLater = self.server.reactor.callLater  # type: ignore[method-assign]
        channel.timeOut = None
        channel.MAX_LENGTH = self.server.config.max_header_size
        channel.totalHeadersSize = (self.server.config.max_header_size
                                    + self.server.config.max_request_line + 1)
        channel.maxHeaders = self.server.config.max_headers + 1
        return channel

    def startFactory(self) -> None:
        pass  # Twisted's starts a per-second log-date timer we do not need

    def stopFactory(self) -> None:
        pass

    def log(self, request: http.Request) -> None:
        pass  # the access log is written by ChannelRequest
