"""The twisted.web adapter: Twisted's HTTP/1.1 channel, with its limits answered.

How this works. ``SwitchboardChannel`` is Twisted's ``HTTPChannel`` (keep-alive,
pipelined requests served in order, chunked request bodies), with these changes:

* limits are answered, not dropped: an over-long request line gets 414, too
  many or too large headers 431, a malformed request 400 (with a body), each
  followed by a close (Twisted closes silently or answers a bare 400);
  conflicting framing (Content-Length with Transfer-Encoding, or two
  Content-Lengths) is among the 400s;
* ambiguous input is refused, not guessed at (RFC 9112): a bare LF line end,
  obs-fold, a Transfer-Encoding other than one ``chunked`` (HTTP/1.1 only),
  a missing (HTTP/1.1), repeated or invalid Host, a head that does not start
  with a method (400); HTTP versions other than 1.x get 505, 1.2+ is served
  as 1.1; a chunk declared larger than ``--max-body-size`` is 413 at once;
* ``Expect: 100-continue`` is answered only when the body is acceptable;
* header (slowloris), body (a stalled upload: 408) and keep-alive timeouts
  are decided by the server's sweep (``check_timeout``), not by a timer per
  connection; so is cutting a client that does not read what is written to
  it, and aborting a close that cannot flush (``_output.OutputWatch``);
* a whole plain request head that arrives in one read (the common GET) is parsed
  in one go by ``plain_head`` -- only when every check above would pass and there
  is no body -- and then takes the same methods (Host, persistence, the request);
  anything else goes line by line through Twisted's parser;
* ``upgrade`` hands the transport to an Autobahn protocol, after which bytes
  flow straight to it; a TLS connection that negotiated ``h2`` by ALPN is
  handed the same way, on its first bytes, to ``http2.SwitchboardH2Connection``.

The request itself -- message, body, replies -- is ``http_request.ChannelRequest``.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IProtocolNegotiationFactory
from twisted.python.failure import Failure
from twisted.web import http
from zope.interface import implementer

from asgi_spec.formats import HTTP_TOKEN
from interface_server import _direct_write as direct_write
from interface_server._http import render_error
from interface_server._output import OutputWatch
from interface_server._timeouts import Due, http_connection_due
from interface_server.http_request import ChannelRequest
from interface_server.tls import alpn_protocols

if TYPE_CHECKING:
    from interface_server.server import Server

logger = logging.getLogger("interface_server.http")

#: What a request line can start with: a method (token characters), then a space.
_REQUEST_START = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]*(?: |\r?\Z)")
_HTTP_VERSION = re.compile(rb"HTTP/([0-9])\.([0-9])")
#: RFC 3986 host (reg-name or IP literal) with an optional port.
_HOST = re.compile(rb"(?:\[[0-9A-Za-z:.]+\]|[A-Za-z0-9._~!$&'()*+,;=%-]*)(?::[0-9]*)?")
#: What ``plain_head`` takes as a request target: printable ASCII, no space.
_TARGET = re.compile(rb"[\x21-\x7e]+")
#: Header names that make a request more than a plain head (a body, an expectation).
_BODY_HEADERS = frozenset({b"content-length", b"transfer-encoding", b"expect"})
#: The fast path touches two of HTTPChannel's private fields; without them (another
#: Twisted) every head takes the line-by-line path.
_PLAIN_HEADS = all(hasattr(http.HTTPChannel, name)
                   for name in ("_HTTPChannel__first_line", "_HTTPChannel__header"))


def plain_head(data: bytes, *, max_request_line: int, max_header_size: int,
               max_headers: int) -> tuple[bytes, bytes, bytes, list[tuple[bytes, bytes]]] | None:
    """``(method, target, version, headers)`` of ``data`` if it is exactly one complete
    request head that every check of the line-by-line path would pass and that has no
    body: else ``None`` (that path then decides, with its own answer).

    Taken: CRLF line ends only, no NUL, no bare CR; a request line of a token, a
    printable target and HTTP/1.0 or 1.1, within ``max_request_line``; header lines
    ``token: value`` (no folding), at most ``max_headers`` of them, the head within
    ``max_header_size``; none of Content-Length, Transfer-Encoding or Expect.
    """
    end = len(data) - 4
    crlf = data.count(b"\r\n")
    if (end < 0 or data.find(b"\r\n\r\n") != end or b"\0" in data
            or data.count(b"\r") != crlf or data.count(b"\n") != crlf):
        return None
    lines = data[:end].split(b"\r\n")
    if len(lines) - 1 > max_headers or end - 2 * (len(lines) - 1) > max_header_size:
        return None
    request_line = lines[0]
    parts = request_line.split(b" ")
    if len(request_line) > max_request_line or len(parts) != 3:
        return None
    method, target, version = parts
    if ((version != b"HTTP/1.1" and version != b"HTTP/1.0") or not HTTP_TOKEN.fullmatch(method)
            or not _TARGET.fullmatch(target)):
        return None
    headers = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not HTTP_TOKEN.fullmatch(name) or name.lower() in _BODY_HEADERS:
            return None
        headers.append((name, value.strip(b" \t")))
    return method, target, version, headers


#: Twisted's chunked decoder, looked up once: ``twisted.web.http`` is a deprecation
#: proxy, so every attribute read on it costs a Python call (once per request here).
_ChunkedTransferDecoder = http._ChunkedTransferDecoder


class _SizedChunkedDecoder(_ChunkedTransferDecoder):
    """Twisted's chunked decoder, telling ``declared`` each chunk's size before its data."""

    def __init__(self, data: Any, finish: Any, declared: Any) -> None:
        super().__init__(data, finish)
        self._declared = declared

    def _dataReceived_CHUNK_LENGTH(self) -> bool:
        done = super()._dataReceived_CHUNK_LENGTH()
        if done and self.state == "BODY":
            self._declared(self.length)
        return done


class SwitchboardChannel(http.HTTPChannel):
    """Twisted's HTTP/1.1 channel with answered limits, sweep timeouts and upgrades."""

    requestFactory = ChannelRequest
    server: Server

    def __init__(self) -> None:
        super().__init__()
        self.rejected = False
        self.secure = False  # TLS: set when the connection is made
        self.over_limit = False  # accepted past --limit-concurrency: answer 503
        self.upgraded: Any = None
        self._protocol_checked = False  # ALPN looked at (on the first bytes)
        self.head_started_at: float | None = None
        self.idle_since: float | None = None
        self._in_headers = False
        self._head_bytes = 0
        self._chunked = False  # this request's Transfer-Encoding: chunked was seen
        self.body_received_at: float | None = None  # reading a body: its last bytes came
        self._host: Any = None  # getHost() and getPeer(), once asked
        self._peer: Any = None

    def connectionMade(self) -> None:
        super().connectionMade()
        self.secure = super().isSecure()
        direct_write.enable(self.transport)
        self.idle_since = self.server.now()
        self.output = OutputWatch(self.server.config.max_output_buffer)
        self.server.http_channels.add(self)
        self.over_limit = self.server.over_concurrency_limit()

    def dataReceived(self, data: bytes) -> None:
        # What one read makes -- a pong per ping of a flood, answers to pipelined
        # requests -- leaves in one send, never as a stream of tiny segments, which
        # the kernel charges far more memory than their bytes (a flooding client that
        # never read then stalled instead of being cut: tests/hostile).
        corked = direct_write.cork()
        try:
            self._read(data)
        finally:
            if corked:
                direct_write.uncork()

    def _read(self, data: bytes) -> None:
        if self.upgraded is not None:
            self.upgraded.dataReceived(data)
            return
        if not self._protocol_checked:
            self._protocol_checked = True
            if getattr(self.transport, "negotiatedProtocol", None) == b"h2":
                self._start_http2(data)
                return
        if self.rejected:
            return
        if (self.line_mode and not self._handlingRequest and self.head_started_at is None
                and data):  # a head begins (a body arrives in raw mode: not a head)
            self.head_started_at = self.server.now()
            self.idle_since = None
            if self._plain_head(data):
                return
        super().dataReceived(data)
        self._check_partial_line()

    def _plain_head(self, data: bytes) -> bool:
        """Serve ``data`` if it is one whole plain request head (``plain_head``), read
        at once between requests -- the common case: a GET in one segment -- with the
        steps the line-by-line path would take, and the same methods for what is not
        parsing (Host, persistence, the request itself). ``False``: nothing was done.
        """
        if (not _PLAIN_HEADS or self._buffer or self._busyReceiving or self.paused
                or self.requests or not self.persistent
                or self._HTTPChannel__first_line != 1 or self._HTTPChannel__header):
            return False
        config = self.server.config
        head = plain_head(data, max_request_line=config.max_request_line,
                          max_header_size=min(config.max_header_size, self.totalHeadersSize),
                          max_headers=config.max_headers)
        if head is None:
            return False
        method, target, version, headers = head
        self.resetTimeout()
        request = self.requestFactory(self, len(self.requests))
        self.requests.append(request)
        self._HTTPChannel__first_line = 0
        self._command, self._path, self._version = method, target, version
        self._chunked = False
        add = request.requestHeaders.addRawHeader
        for name, value in headers:
            add(name, value)
        request.raw_headers.extend(headers)
        self._in_headers = False
        self.head_started_at = None
        self.allHeadersReceived()
        self.allContentReceived()  # no Content-Length or Transfer-Encoding: no body
        return True

    def _check_partial_line(self) -> None:
        """Refuse an unfinished head line that can never become valid, without waiting."""
        pending = self._buffer
        if self.rejected or self.upgraded is not None or not self.line_mode or not pending:
            return
        if b"\n" in pending:  # a CRLF would have ended the line: this LF is bare
            self.reject(400, "lines of the request head must end with CRLF, not a bare LF")
        elif not self._in_headers and not _REQUEST_START.match(pending):
            self.reject(400, "the request does not start with an HTTP method "
                        "(TLS or another protocol sent to a plain-HTTP port?)")

    def getHost(self) -> Any:
        """The local address, read once per connection (Twisted asks the socket, a
        system call, and builds a new address object for every request)."""
        if self._host is None:
            self._host = super().getHost()
        return self._host

    def getPeer(self) -> Any:
        """The peer's address, made once per connection (Twisted: once per request)."""
        if self._peer is None:
            self._peer = super().getPeer()
        return self._peer

    def isSecure(self) -> bool:
        """Twisted's answer (an interface lookup on the transport, ~2% of the server's
        CPU when asked per request), taken once when the connection is made."""
        return self.secure

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
                line = self._request_line_version(line)
                if line is None:
                    return
                self._in_headers = True
                self._head_bytes = len(line)
                self._chunked = False
        elif not line:
            self._in_headers = False
            self.head_started_at = None
        else:
            if line[:1] in (b" ", b"\t"):
                self.reject(400, "obsolete line folding (a header line starting with "
                            "whitespace) is not accepted")
                return
            self._head_bytes += len(line)
            if self._head_bytes > config.max_header_size:
                self.reject(431, f"the request head is larger than {config.max_header_size} bytes")
                return
        super().lineReceived(line)

    def _request_line_version(self, line: bytes) -> bytes | None:
        """``line`` with HTTP/1.2+ made 1.1 (RFC 9112 2.3); None after a 505 for 0.x, 2+."""
        parts = line.split(b" ")
        version = _HTTP_VERSION.fullmatch(parts[-1]) if len(parts) == 3 else None
        if version is None:
            return line  # Twisted's parser decides (400 if malformed)
        if version[1] != b"1":
            self.reject(505, "only HTTP/1.0 and HTTP/1.1 are served here "
                        "(HTTP/2 needs TLS with ALPN)")
            return None
        if version[2] not in (b"0", b"1"):
            return b" ".join((parts[0], parts[1], b"HTTP/1.1"))
        return line

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
        name, _, value = line.partition(b":")
        if name.lower() == b"transfer-encoding":
            if (self._chunked or self._version != b"HTTP/1.1"
                    or value.strip(b" \t").lower() != b"chunked"):
                self.reject(400, "only one 'Transfer-Encoding: chunked' is accepted, "
                            "and only in HTTP/1.1")
                return False
            self._chunked = True
        if not super().headerReceived(line):
            return False
        request.raw_headers.append((name, value.strip(b" \t")))
        return True

    def allHeadersReceived(self) -> None:
        request = self.requests[-1]
        self.persistent = self.checkPersistence(request, self._version)
        hosts = [value for name, value in request.raw_headers if name.lower() == b"host"]
        if (len(hosts) > 1 or (not hosts and self._version == b"HTTP/1.1")
                or (hosts and not _HOST.fullmatch(hosts[0]))):
            self.reject(400, "an HTTP/1.1 request needs exactly one Host header, "
                        "with a valid host")
            return
        request.gotLength(self.length)
        if self.rejected:
            return
        if self.length != 0:
            self.body_received_at = self.server.now()
        expect = request.requestHeaders.getRawHeaders(b"expect")
        if (expect and expect[0].lower() == b"100-continue" and self._version == b"HTTP/1.1"
                and self.length != 0):
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def allContentReceived(self) -> None:
        self.body_received_at = None
        if not self.rejected:
            super().allContentReceived()

    def rawDataReceived(self, data: bytes) -> None:
        if self.body_received_at is not None and not self._handlingRequest:
            self.body_received_at = self.server.now()
        if not self.rejected:
            super().rawDataReceived(data)

    def _maybeChooseTransferDecoder(self, header: bytes, data: bytes) -> bool:
        ok: bool = super()._maybeChooseTransferDecoder(header, data)
        if ok and type(self._transferDecoder) is _ChunkedTransferDecoder:
            request = self.requests[-1]  # check each chunk's size before its data comes
            self._transferDecoder = _SizedChunkedDecoder(
                request.handleContentChunk, self._finishRequestBody, request.chunk_declared)
        return ok

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
        transport = self.transport
        if transport is not None:
            if self.output.linger_over(bool(transport.disconnecting), now):
                transport.abortConnection()  # closing, but the client reads nothing
                return
            if self.output.cut_on_sweep(transport):
                self.cut_slow_reader()
                return
        due = http_connection_due(now, head_started_at=self.head_started_at,
                                  idle_since=self.idle_since,
                                  header_timeout=config.header_timeout,
                                  keep_alive_timeout=config.keep_alive_timeout,
                                  body_received_at=self.body_received_at,
                                  body_timeout=config.body_timeout)
        if due is Due.HEADER_TIMEOUT:
            self.reject(408, f"the request head was not complete within "
                        f"{config.header_timeout:g} s")
        elif due is Due.BODY_TIMEOUT:
            self.body_received_at = None
            self.reject(408, f"no part of the request body arrived for "
                        f"{config.body_timeout:g} s")
        elif due is Due.IDLE_TIMEOUT:
            self.idle_since = None
            self.close()

    def cut_slow_reader(self) -> None:
        """The client left more than --max-output-buffer unread for a sweep: cut it."""
        self.server.stats["slow_readers_cut"] += 1
        logger.info("cut a connection from %s: more than %d bytes stayed unread "
                    "(--max-output-buffer)", self.transport.getPeer(), self.output.limit)
        for request in self.requests:
            request.aborted = True  # later replies are dropped, not written
        self.transport.abortConnection()

    def close(self) -> None:
        """Close the connection once (a second loseConnection would upset the producer)."""
        if self.transport is not None and not self.transport.disconnecting:
            self.loseConnection()

    @property
    def idle(self) -> bool:
        """No request in progress (safe to close when draining)."""
        return (not self._handlingRequest and self.head_started_at is None
                and self.body_received_at is None)

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

    def _start_http2(self, data: bytes) -> None:
        """ALPN chose h2: an HTTP/2 connection takes the transport (see ``http2``)."""
        from interface_server.http2 import SwitchboardH2Connection

        connection = SwitchboardH2Connection(self.server, self.factory)
        self.upgraded = connection
        self.idle_since = None
        self.server.http_channels.discard(self)
        self._networkProducer.unregisterProducer()  # the transport's backpressure goes to it
        connection.makeConnection(self.transport)
        self._networkProducer.registerProducer(connection, True)
        connection.dataReceived(data)

    def connectionLost(self, reason: Failure) -> None:
        self.server.http_channels.discard(self)
        if self.upgraded is not None:
            self.upgraded.connectionLost(reason)
            return
        super().connectionLost(reason)


@implementer(IProtocolNegotiationFactory)
class SwitchboardHTTPFactory(http.HTTPFactory):
    """Builds ``SwitchboardChannel``s for one ``Server`` (no Twisted log).

    Over TLS it offers ``h2`` and ``http/1.1`` by ALPN (``acceptableProtocols``,
    asked by Twisted's TLS layer).
    """

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

    def acceptableProtocols(self) -> list[bytes]:
        """The ALPN protocols offered over TLS, preferred first."""
        return list(alpn_protocols())

    def startFactory(self) -> None:
        pass  # Twisted's starts a per-second log-date timer we do not need

    def stopFactory(self) -> None:
        pass

    def log(self, request: http.Request) -> None:
        pass  # the access log is written by ChannelRequest
