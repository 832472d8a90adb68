"""The HTTP bridge: ``http.request`` -> ``HttpRequest`` -> the project's views -> ``http.response``.

How this works, per message (``AsgiHandler.handle``, a generator of replies):

1. ``request_started`` is sent (Django recycles database connections on it).
2. The body is read: the message's inline ``body``, then, if it names a
   ``body_channel``, every chunk from it with blocking receives, each waiting
   at most ``body_timeout`` seconds (default 60, setting
   ``SWITCHBOARD_BODY_TIMEOUT``). Chunks go to a ``SpooledTemporaryFile`` that
   moves to disk past ``FILE_UPLOAD_MAX_MEMORY_SIZE``, so an upload never sits
   in memory whole. A body that stops arriving is answered 408; a chunk with
   ``closed`` (the client left) ends the exchange with no reply.
3. ``AsgiRequest`` (a ``WSGIRequest``) is built from a WSGI environ made from
   the message: ``SCRIPT_NAME`` from ``root_path``, ``PATH_INFO``,
   ``QUERY_STRING``, ``CONTENT_TYPE``/``CONTENT_LENGTH``, ``HTTP_*`` (repeated
   headers joined), ``REMOTE_ADDR``/``PORT``, ``SERVER_NAME``/``PORT`` and
   ``wsgi.url_scheme``. A message that cannot be decoded is answered 400.
4. ``get_response`` runs the URLconf, middleware and view; errors become
   Django's 500 page (the technical one with ``DEBUG``).
5. The response is yielded as replies of at most ``chunk_size`` bytes of
   content each: a Response (status, headers with one ``Set-Cookie`` per
   cookie), then Response Chunks with ``more_content``. A streaming response
   sends its head at once, one chunk per piece as the iterator makes it, and
   an empty last chunk; a ``FileResponse`` reads ``chunk_size`` blocks one
   ahead, so its head goes with the first block and its last block ends it.
6. ``response.close()`` runs (``request_finished``), whatever happened.

``ViewConsumer`` sends each reply as soon as it is made (not held until the
consumer returns: a stream may be long), retrying a full reply channel with
bounded backoff; when it gives up, the response is closed and dropped.
"""

from __future__ import annotations

import logging
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.core import signals
from django.core.handlers import base
from django.core.handlers.wsgi import WSGIRequest, get_script_name
from django.core.signals import setting_changed
from django.http import FileResponse, HttpResponse, HttpResponseBadRequest
from django.urls import set_script_prefix

from asgi_spec import formats
from asgi_spec.exceptions import ChannelFull, MessageFormatError
from worker.backoff import retry_delays

logger = logging.getLogger("worker.django.request")

#: Largest ``content`` of one reply message (bytes); well under the 1 MiB
#: message limit of every layer.
CHUNK_SIZE = 256 * 1024
#: Statuses whose responses have no body (RFC 9110).
_NO_BODY = frozenset({204, 304})


class RequestTimeout(Exception):
    """The request body stopped arriving (answered 408)."""


class RequestAborted(Exception):
    """The client went away while sending the body (no reply)."""


def read_body(message: Any, layer: Any, timeout: float,
              max_memory: int) -> tuple[Any, int]:
    """``(file, size)``: the whole body, spooled, positioned at 0.

    Raises ``RequestTimeout``, ``RequestAborted`` or ``MessageFormatError``
    (a malformed chunk).
    """
    spool = tempfile.SpooledTemporaryFile(max_size=max_memory)  # noqa: SIM115 (handed on)
    try:
        first = message.get("body") or b""
        spool.write(first)
        size = len(first)
        channel = message.get("body_channel")
        while channel:
            name, chunk = layer.receive([channel], block=True, timeout=timeout)
            if name is None:
                raise RequestTimeout(f"no body chunk on {channel} for {timeout:g} s")
            formats.validate_http_request_body(chunk)
            if chunk.get("closed"):
                raise RequestAborted(channel)
            content = chunk.get("content", b"")
            spool.write(content)
            size += len(content)
            if not chunk.get("more_content", False):
                break
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    return spool, size


def _wsgi_str(text: str) -> str:
    """A str as WSGI carries it: its UTF-8 bytes read as latin-1."""
    return text.encode("utf-8").decode("latin-1")


def build_environ(message: Any, body: Any, body_size: int) -> dict[str, Any]:
    """The WSGI environ for an ``http.request`` message (``body``: a file)."""
    root_path = message.get("root_path") or ""
    path = message["path"]
    if root_path and (path == root_path or path.startswith(root_path + "/")):
        path_info = path[len(root_path):]
    else:
        path_info = path
    environ: dict[str, Any] = {
        "REQUEST_METHOD": message["method"],
        "SCRIPT_NAME": _wsgi_str(root_path),
        "PATH_INFO": _wsgi_str(path_info),
        "QUERY_STRING": (message.get("query_string") or b"").decode("latin-1"),
        "SERVER_PROTOCOL": f"HTTP/{message.get('http_version', '1.1')}",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": message.get("scheme") or "http",
        "wsgi.input": body,
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    client = message.get("client")
    if client:
        environ["REMOTE_ADDR"], environ["REMOTE_PORT"] = client[0], str(client[1])
    else:
        environ["REMOTE_ADDR"], environ["REMOTE_PORT"] = "", "0"
    server = message.get("server")
    if server:
        environ["SERVER_NAME"], environ["SERVER_PORT"] = server[0], str(server[1])
    else:
        environ["SERVER_NAME"], environ["SERVER_PORT"] = "unknown", "0"
    for raw_name, raw_value in message.get("headers") or ():
        name = raw_name.decode("latin-1").upper()
        if "_" in name:
            continue  # X_Foo would pass as X-Foo in the environ (CVE-2015-0219)
        value = raw_value.decode("latin-1")
        if name == "CONTENT-LENGTH":
            key = "CONTENT_LENGTH"
        elif name == "CONTENT-TYPE":
            key = "CONTENT_TYPE"
        else:
            key = "HTTP_" + name.replace("-", "_")
        if key in environ:
            separator = "; " if key == "HTTP_COOKIE" else ","
            environ[key] = f"{environ[key]}{separator}{value}"
        else:
            environ[key] = value
    if body_size or "CONTENT_LENGTH" in environ:
        environ["CONTENT_LENGTH"] = str(body_size)  # what actually arrived
    return environ


class AsgiRequest(WSGIRequest):
    """A Django request made from an ``http.request`` message.

    ``META`` is the WSGI environ ``build_environ`` makes; ``message`` and
    ``reply_channel`` give access to the channel side.
    """

    def __init__(self, message: Any, body: Any = None, body_size: int = 0) -> None:
        self.message = message
        self.reply_channel = message.get("reply_channel")
        if body is None:
            body = tempfile.SpooledTemporaryFile(max_size=1)  # noqa: SIM115 (closed by close())
            body_size = 0
        self._body_file = body
        super().__init__(build_environ(message, body, body_size))

    def close(self) -> None:
        super().close()
        self._body_file.close()


class AsgiHandler(base.BaseHandler):
    """Runs Django for ``http.request`` messages; ``handle`` yields the reply messages."""

    request_class = AsgiRequest
    chunk_size = CHUNK_SIZE
    #: Seconds to wait for each body chunk before answering 408.
    body_timeout: float = 60.0

    def __init__(self) -> None:
        super().__init__()
        self.load_middleware()

    def handle(self, message: Any) -> Iterator[dict[str, Any]]:
        """Yield the replies to ``message``; always closes what it opened."""
        signals.request_started.send(sender=self.__class__, message=message)
        response = None
        try:
            response = self.get_response_for(message)
            if response is None:
                return
            response._handler_class = self.__class__
            yield from self.encode_response(response, head=message.get("method") == "HEAD")
        finally:
            if response is not None:
                response.close()  # sends request_finished
            else:
                signals.request_finished.send(sender=self.__class__)

    def get_response_for(self, message: Any) -> Any:
        """The ``HttpResponse`` for ``message``; ``None`` when no reply is due."""
        try:
            formats.validate_http_request(message.content if hasattr(message, "content")
                                          else message)
        except MessageFormatError as exc:
            logger.warning("bad http.request message: %s", exc)
            return HttpResponseBadRequest(f"Bad Request: {exc}", content_type="text/plain")
        timeout = getattr(settings, "SWITCHBOARD_BODY_TIMEOUT", self.body_timeout)
        layer = getattr(message, "layer", None)
        try:
            body, size = read_body(message, layer, timeout, settings.FILE_UPLOAD_MAX_MEMORY_SIZE)
        except RequestAborted:
            logger.info("client left while sending the body of %s %s", message["method"],
                        message["path"])
            return None
        except RequestTimeout as exc:
            logger.warning("request body timed out for %s %s: %s", message["method"],
                           message["path"], exc)
            return HttpResponse("Request Timeout: the request body stopped arriving",
                                status=408, content_type="text/plain")
        except MessageFormatError as exc:
            logger.warning("bad request body chunk: %s", exc)
            return HttpResponseBadRequest(f"Bad Request: {exc}", content_type="text/plain")
        try:
            request = self.request_class(message, body, size)
        except UnicodeError as exc:
            body.close()
            logger.warning("cannot decode the request %s: %s", message.get("path"), exc)
            return HttpResponseBadRequest("Bad Request: undecodable request",
                                          content_type="text/plain")
        set_script_prefix(get_script_name(request.environ))
        try:
            return self.get_response(request)
        except Exception:  # DEBUG_PROPAGATE_EXCEPTIONS, or a broken middleware chain
            logger.exception("internal server error: %s", request.path)
            return HttpResponse("Internal Server Error", status=500, content_type="text/plain")

    @staticmethod
    def response_headers(response: Any) -> list[list[bytes]]:
        """The response's headers as bytes pairs, one ``Set-Cookie`` per cookie."""
        headers = [[name.encode("latin-1"), value.encode("latin-1")]
                   for name, value in response.items()]
        for cookie in response.cookies.values():
            headers.append([b"Set-Cookie", cookie.output(header="").strip().encode("latin-1")])
        return headers

    def encode_response(self, response: Any, *, head: bool = False) -> Iterator[dict[str, Any]]:
        """The reply messages for ``response``, ``chunk_size`` bytes of content at most each."""
        start: dict[str, Any] = {"status": response.status_code,
                                 "headers": self.response_headers(response)}
        no_body = head or response.status_code in _NO_BODY or response.status_code < 200
        if no_body:
            yield {**start, "content": b""}
            return
        size = self.chunk_size
        if not response.streaming:
            content = response.content
            pieces = [content[i:i + size] for i in range(0, len(content), size)] or [b""]
            yield {**start, "content": pieces[0], "more_content": len(pieces) > 1}
            for index, piece in enumerate(pieces[1:], start=2):
                yield {"content": piece, "more_content": index < len(pieces)}
            return
        if isinstance(response, FileResponse):
            # A file is read ahead by one block, so its last block ends the
            # response (a client that stops at Content-Length never races an
            # empty last chunk) and the head travels with the first block.
            response.block_size = size
            head: dict[str, Any] = start
            pending: bytes | None = None
            for part in response:
                if not part:
                    continue
                if pending is not None:
                    yield {**head, "content": pending, "more_content": True}
                    head = {}
                pending = bytes(part)
            yield {**head, "content": pending or b"", "more_content": False}
            return
        yield {**start, "content": b"", "more_content": True}
        for part in response:
            for i in range(0, len(part), size):
                yield {"content": bytes(part[i:i + size]), "more_content": True}
        yield {"content": b"", "more_content": False}


class ViewConsumer:
    """The consumer that serves ``http.request`` with Django views (routed by default)."""

    handler_class: type[AsgiHandler] = AsgiHandler
    #: Seconds of retries on a full reply channel before a response is dropped.
    reply_retry_total: float = 10.0

    def __init__(self) -> None:
        self._handler: AsgiHandler | None = None
        self._lock = threading.Lock()

    @property
    def handler(self) -> AsgiHandler:
        handler = self._handler
        if handler is None:
            with self._lock:
                if self._handler is None:
                    self._handler = self.handler_class()
                handler = self._handler
        return handler

    def reset(self) -> None:
        """Drop the handler (and its middleware chain): the next request rebuilds it."""
        self._handler = None

    def __call__(self, message: Any, **kwargs: Any) -> None:
        replies = self.handler.handle(message)
        try:
            for reply in replies:
                if not self.send(message, reply):
                    break
        finally:
            replies.close()

    def send(self, message: Any, reply: dict[str, Any]) -> bool:
        """Send ``reply`` now; ``False`` when the reply channel stayed full (dropped)."""
        reply_channel = message.reply_channel
        if reply_channel is None:
            logger.error("http.request without a reply_channel: dropped")
            return False
        delays = retry_delays(total=self.reply_retry_total)
        while True:
            try:
                reply_channel.send(reply, immediately=True)
                return True
            except ChannelFull:
                delay = next(delays, None)
                if delay is None:
                    logger.error("reply channel %s stayed full for %.0f s; response dropped",
                                 reply_channel.name, self.reply_retry_total)
                    return False
                time.sleep(delay)

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"


view_consumer = ViewConsumer()
view_consumer.__module__ = __name__
view_consumer.__qualname__ = "view_consumer"  # type: ignore[attr-defined]


def _settings_changed(*, setting: str, **kwargs: Any) -> None:
    if setting in ("MIDDLEWARE", "ROOT_URLCONF"):
        view_consumer.reset()


setting_changed.connect(_settings_changed)
