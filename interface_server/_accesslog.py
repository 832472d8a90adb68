"""Access-log lines, as text (a ``str.format`` template) or as one JSON object.

The default text line is the NCSA combined format plus the duration::

    127.0.0.1 - - [21/Nov/2025:09:16:02 +0000] "GET /chat/?a=1 HTTP/1.1" 200 512 "-" "curl/8" 3.1ms

Every value that came from the client (path, referer, user agent) is escaped
so that a crafted request cannot forge or split log lines.
"""

from __future__ import annotations

import json
import string
import time
from dataclasses import dataclass

DEFAULT_FORMAT = (
    '{client} - - [{time}] "{method} {path} HTTP/{http_version}" {status} {size} '
    '"{referer}" "{user_agent}" {duration_ms:.1f}ms'
)

FIELDS = frozenset({
    "client", "time", "iso_time", "method", "path", "http_version", "status", "size",
    "referer", "user_agent", "duration", "duration_ms", "protocol",
})


@dataclass(frozen=True, slots=True)
class AccessRecord:
    """One finished exchange: an HTTP response, or a WebSocket's end."""

    timestamp: float  # when the request arrived (wall clock seconds)
    client: str | None
    method: str
    path: str  # the request target as sent, query included
    http_version: str
    status: int
    size: int  # body bytes sent
    duration: float  # seconds
    referer: str = ""
    user_agent: str = ""
    protocol: str = "http"
    client_port: int | None = None  # the client's TCP port (not in the text formats)


def _escape(text: str) -> str:
    """Backslash-escape quotes, backslashes and non-printable characters."""
    out = []
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif char.isprintable() and char != "\x7f":
            out.append(char)
        else:
            code = ord(char)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
    return "".join(out)


def _values(record: AccessRecord) -> dict[str, object]:
    return {
        "client": record.client or "-",
        "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(record.timestamp)),
        "iso_time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.timestamp))
        + f".{int(record.timestamp * 1000) % 1000:03d}Z",
        "method": _escape(record.method),
        "path": _escape(record.path),
        "http_version": _escape(record.http_version),
        "status": record.status,
        "size": record.size,
        "referer": _escape(record.referer) or "-",
        "user_agent": _escape(record.user_agent) or "-",
        "duration": record.duration,
        "duration_ms": record.duration * 1000,
        "protocol": record.protocol,
    }


def check_template(template: str) -> None:
    """Raise ``ValueError`` naming the problem if ``template`` cannot format a record."""
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name}
    except ValueError as exc:
        raise ValueError(f"access log format {template!r} is malformed: {exc}") from None
    unknown = sorted(n for n in names if n.split(".")[0].split("[")[0] not in FIELDS)
    if unknown:
        raise ValueError(
            f"access log format names unknown field(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(FIELDS))}"
        )
    try:
        format_text(AccessRecord(0.0, "127.0.0.1", "GET", "/", "1.1", 200, 0, 0.0), template)
    except (ValueError, TypeError, IndexError, KeyError, AttributeError) as exc:
        raise ValueError(f"access log format {template!r} cannot be applied: {exc}") from None


def format_text(record: AccessRecord, template: str = DEFAULT_FORMAT) -> str:
    """The text access-log line for ``record``."""
    return template.format(**_values(record))


def format_json(record: AccessRecord) -> str:
    """The access-log line for ``record`` as one JSON object (no newline)."""
    values = _values(record)
    del values["time"], values["duration"]
    values["time"] = values.pop("iso_time")
    values["client"] = record.client
    values["method"] = record.method
    values["path"] = record.path
    values["http_version"] = record.http_version
    values["referer"] = record.referer or None
    values["user_agent"] = record.user_agent or None
    values["duration_ms"] = round(record.duration * 1000, 3)
    return json.dumps(values, ensure_ascii=True, separators=(",", ":"))
