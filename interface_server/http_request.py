"""``ChannelRequest``: one HTTP request as an ``http.request`` message, and its replies.

How this works. Twisted's channel (``http_channel``; for HTTP/2 a stream of
``http2.SwitchboardH2Connection``, through ``http2.H2ChannelRequest``) creates
one of these per request and reads the whole body into it (spooled to a temp file past 100 kB,
refused with 413 past ``--max-body-size``). Then ``process``:

1. builds the message (``_http.build_http_request``); a WebSocket handshake is
   handed to the server to upgrade instead;
2. asks the server whether a live worker consumes ``http.request`` (503 at
   once if none does);
3. sends it -- the body inline, or its first chunk inline and the rest on a
   ``body_channel`` in bounded chunks, one after the other, retrying a chunk
   while the body channel is full;
4. writes every reply the server's reply loop routes to it
   (``handle_reply``), streaming chunks as they come, until one says
   ``more_content: False``.

A send the layer refuses becomes a 503 (full, unavailable) or 413; a reply
that breaks the format becomes a 500 (or a cut connection if the response had
started); ``check_timeout`` gives 504 past ``--http-timeout``. A client that
leaves early makes an ``http.disconnect`` (and a closed body chunk).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.python.failure import Failure
from twisted.web import http

from asgi_spec import names
from asgi_spec.exceptions import ChannelFull, MessageFormatError
from asgi_spec.formats import HTTP_DISCONNECT, HTTP_REQUEST, HTTP_REQUEST_BODY
from interface_server._accesslog import AccessRecord
from interface_server._http import (
    ABORTED_BODY_CHUNK,
    ClientError,
    RequestParts,
    body_too_large,
    build_http_request,
    error_response,
    header_value,
    interpret_reply,
    is_websocket_upgrade,
    message_headers,
    split_body,
)
from interface_server._output import HARD_FACTOR, over_output_limit
from interface_server._timeouts import Due, http_request_due

if TYPE_CHECKING:
    from interface_server.http_channel import SwitchboardChannel
    from interface_server.server import Server

logger = logging.getLogger("interface_server.http")


def peer_address(address: object) -> tuple[str, int] | None:
    """``(host, port)`` of a TCP address; None for UNIX sockets and the like."""
    if isinstance(address, IPv4Address | IPv6Address):
        return (address.host, address.port)
    return None


class ChannelRequest(http.Request):
    """One HTTP request: becomes ``http.request``, then writes its replies."""

    def __init__(self, channel: SwitchboardChannel, queued: object = None) -> None:
        super().__init__(channel)
        self.server: Server = self.find_server(channel)
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self.body_size = 0
        self.reply_channel: str | None = None
        self.delivery = "none"  # none -> checking -> pending -> sent; or failed
        self.response_started = False
        self.started = self.server.now()
        self.waiting_since = self.started
        self.arrived_at = time.time()
        self._logged = False
        self.aborted = False
        self.message_path = ""
        self.message_client: list[Any] | None = None
        self._body_channel: str | None = None
        self._chunks: Any = None

    def find_server(self, channel: Any) -> Server:
        return channel.server  # type: ignore[no-any-return]

    # -- reading (called by the channel) -----------------------------------

    def gotLength(self, length: int | None) -> None:
        limit = self.server.config.max_body_size
        if body_too_large(length, limit):
            self.channel.reject(413, f"the request body is larger than {limit} bytes")
            return
        super().gotLength(length)

    def chunk_declared(self, size: int) -> None:
        """A chunked body announced its next chunk: 413 now if it cannot fit."""
        limit = self.server.config.max_body_size
        if body_too_large(self.body_size + size, limit):
            self.channel.reject(413, f"the request body is larger than {limit} bytes")

    def handleContentChunk(self, data: bytes) -> None:
        if self.channel.rejected:
            return
        self.body_size += len(data)
        limit = self.server.config.max_body_size
        if body_too_large(self.body_size, limit):
            self.channel.reject(413, f"the request body is larger than {limit} bytes")
            return
        super().handleContentChunk(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        # Twisted's version also parses form bodies into self.args: not needed here.
        self.content.seek(0, 0)
        self.method, self.uri, self.clientproto = command, path, version
        self.path = path.split(b"?", 1)[0]
        self.args = {}
        self.process()

    def process(self) -> None:
        server, config = self.server, self.server.config
        self.waiting_since = server.now()
        if server.ops is not None and server.ops.handle(self):
            return  # an operations path (/metrics, /-/health ...), answered by the server
        parts = RequestParts(
            method=self.method, target=self.uri, version=self.clientproto,
            headers=self.raw_headers, client=peer_address(self.client),
            server=peer_address(self.host), secure=self.channel.isSecure(),
        )
        if self.connection_over_limit():
            self.respond_error(503, f"the server is at its limit of {config.limit_concurrency} "
                               "concurrent connections (--limit-concurrency)", close=True)
            return
        if self.clientproto == b"HTTP/1.1" and is_websocket_upgrade(
                self.method, message_headers(self.raw_headers)):  # 1.0 ignores Upgrade
            server.upgrade_to_websocket(self, parts)
            return
        if server.draining:
            self.respond_error(503, "the server is shutting down; retry", close=True)
            return
        first, self._chunks = split_body(self.content, self.body_size, config.body_chunk_size)
        if self._chunks is not None:
            self._body_channel = names.new_channel_name(HTTP_REQUEST_BODY)
        self.reply_channel = server.router.add(self)
        try:
            message = build_http_request(
                parts, reply_channel=self.reply_channel, root_path=config.root_path,
                body=first, body_channel=self._body_channel,
                trusted=config.trusted_proxies if config.proxy_headers else None,
            )
        except ClientError as exc:
            self.respond_error(exc.status, exc.detail, close=True)
            return
        self.message_path, self.message_client = message["path"], message["client"]
        server.http_requests.add(self)
        self.delivery = "checking"
        answered, known = server.consumer_known(HTTP_REQUEST)
        if answered:
            self._send_request(known, message)
        else:
            server.consumer_available(HTTP_REQUEST).addCallback(self._send_request, message)

    # -- sending ---------------------------------------------------------------

    def _send_request(self, available: bool | None, message: dict[str, Any]) -> None:
        if self.finished or self._disconnected:
            self.delivery = "failed"
            return
        if available is False:
            self.delivery = "failed"
            self.server.stats["http_no_worker"] += 1
            self.respond_error(503, "no worker is consuming the http.request channel; "
                               "start one with `runworker`")
            return
        if self.server.replies_unreachable:  # its answer could not come back
            self.delivery = "failed"
            self.server.stats["layer_unavailable"] += 1
            self.respond_error(503, "the channel layer is unavailable; retry shortly")
            return
        self.delivery = "pending"
        self.server.send_to_layer(HTTP_REQUEST, message).addCallbacks(
            self._request_sent, self._request_failed)

    def _request_sent(self, _: object) -> None:
        self.delivery = "sent"
        self._send_next_chunk()

    def _request_failed(self, failure: Failure) -> None:
        self.delivery = "failed"
        self.respond_error(*self.server.layer_error_answer(failure, HTTP_REQUEST), close=True)

    def _send_next_chunk(self, _: object = None) -> None:
        if self._chunks is None or self.finished or self._disconnected:
            return
        chunk = next(self._chunks, None)
        if chunk is None:
            self._chunks = None
            return
        self._send_chunk(chunk)

    def _send_chunk(self, chunk: dict[str, Any]) -> None:
        assert self._body_channel is not None
        self.server.send_to_layer(self._body_channel, chunk).addCallbacks(
            self._send_next_chunk, self._chunk_failed, errbackArgs=(chunk,))

    def _chunk_failed(self, failure: Failure, chunk: dict[str, Any]) -> None:
        if self.finished or self._disconnected:
            return
        if failure.check(ChannelFull):  # the worker reads slower than we send: retry
            self.server.reactor.callLater(0.05, self._send_chunk, chunk)
            return
        self._chunks = None
        self.respond_error(*self.server.layer_error_answer(failure, self._body_channel or ""),
                           close=True)

    # -- replies (called by the server's reply loop) ---------------------------

    def handle_reply(self, message: dict[str, Any]) -> None:
        if self.finished or self._disconnected or self.aborted:
            return
        try:
            write = interpret_reply(message, started=self.response_started,
                                    head=self.method == b"HEAD")
        except MessageFormatError as exc:
            self.server.stats["bad_replies"] += 1
            logger.error("invalid reply on %s for %s %s: %s", self.reply_channel,
                         self.method.decode("latin-1"), self.message_path, exc)
            if self.response_started:
                self.abort()
            else:
                self.respond_error(500, "the application sent an invalid response "
                                   "(the server log names the field)")
            return
        self.waiting_since = self.server.now()
        if write.status is not None:
            self.response_started = True
            self.setResponseCode(write.status)
            for name, value in write.headers:
                self.responseHeaders.addRawHeader(name, value)
            self._close_if_draining()
        if write.content or write.status is not None:
            self.write(write.content)  # an empty write sends the head (server-sent events)
        if not write.more_content:
            self.finish()
        elif self.output_over_limit():
            self.server.stats["slow_readers_cut"] += 1
            logger.info("cut %s %s: the client left more than %d bytes unread "
                        "(%d x --max-output-buffer)", self.method.decode("latin-1"),
                        self.message_path, HARD_FACTOR * self.server.config.max_output_buffer,
                        HARD_FACTOR)
            self.abort()

    def connection_over_limit(self) -> bool:
        """The connection was accepted past --limit-concurrency: answer 503."""
        return bool(self.channel.over_limit)

    def output_over_limit(self) -> bool:
        """So much is unsent that the response is cut on the write, not at the next sweep
        (``_output``: past ``HARD_FACTOR`` x --max-output-buffer)."""
        return over_output_limit(self.channel.transport,
                                 HARD_FACTOR * self.server.config.max_output_buffer)

    def respond_error(self, status: int, detail: str, *, close: bool = False) -> None:
        """Answer with the server's own error, unless a response already started."""
        if self.finished or self._disconnected:
            return
        if self.response_started:
            self.abort()
            return
        self.response_started = True
        status, headers, body = error_response(status, detail)
        self.setResponseCode(status)
        for name, value in headers:
            self.responseHeaders.setRawHeaders(name, [value])
        if close:
            self.responseHeaders.setRawHeaders(b"connection", [b"close"])
            self.channel.persistent = False
        self._close_if_draining()
        self.write(body)
        self.finish()

    def _close_if_draining(self) -> None:
        if self.server.draining:
            self.responseHeaders.setRawHeaders(b"connection", [b"close"])
            self.channel.persistent = False

    def finish(self) -> None:
        self._forget(self.code)
        super().finish()

    def abort(self) -> None:
        """Cut the connection: the response cannot be completed correctly."""
        self.aborted = True
        if self.channel is not None and self.channel.transport is not None:
            self.channel.transport.abortConnection()

    def check_timeout(self, now: float) -> None:
        due = http_request_due(now, waiting_since=self.waiting_since,
                               response_started=self.response_started,
                               timeout=self.server.config.http_timeout)
        if due is Due.RESPOND_TIMEOUT:
            self.server.stats["http_timeouts"] += 1
            timeout = self.server.config.http_timeout
            logger.warning("no response to %s %s within %ss; answered 504",
                           self.method.decode("latin-1"), self.message_path, timeout)
            self.respond_error(504, f"the application did not respond within {timeout:g} s "
                               "(--http-timeout); is a worker running?")
        elif due is Due.ABORT_STREAM:
            self.server.stats["http_timeouts"] += 1
            self.abort()

    def connectionLost(self, reason: Failure) -> None:
        if self._disconnected:
            return  # (an HTTP/2 stream reset by the server is lost once, then again)
        unanswered = not self.finished
        super().connectionLost(reason)
        if not unanswered or self.reply_channel is None:
            return
        self._forget(499)
        if self.delivery not in ("pending", "sent"):
            return
        if self._body_channel is not None and self._chunks is not None:
            self._chunks = None
            self.server.send_to_layer(self._body_channel, dict(ABORTED_BODY_CHUNK)).addErrback(
                lambda _: None)
        self.server.send_disconnect(
            HTTP_DISCONNECT, {"reply_channel": self.reply_channel, "path": self.message_path})

    def _forget(self, status: int) -> None:
        """The exchange is over: unroute its reply channel and log it once."""
        if self.reply_channel is not None:
            self.server.router.discard(self.reply_channel)
        self.server.http_requests.discard(self)
        if status and not self._logged and self.server.records_access:
            self._logged = True
            headers = message_headers(self.raw_headers)
            client = self.message_client or peer_address(self.client)
            self.server.log_access(AccessRecord(
                timestamp=self.arrived_at,
                client=client[0] if client else None,
                method=self.method.decode("latin-1"),
                path=self.uri.decode("latin-1"),
                http_version=self.clientproto.decode("latin-1").removeprefix("HTTP/"),
                status=status,
                size=self.sentLength,
                duration=max(self.server.now() - self.started, 0.0),
                referer=(header_value(headers, b"referer") or b"").decode("latin-1"),
                user_agent=(header_value(headers, b"user-agent") or b"").decode("latin-1"),
                client_port=client[1] if client else None,
            ))
