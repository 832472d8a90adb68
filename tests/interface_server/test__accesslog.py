"""Tests for ``interface_server._accesslog``: text and JSON access-log lines."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from interface_server._accesslog import (
    AccessRecord,
    check_template,
    format_json,
    format_text,
)

RECORD = AccessRecord(timestamp=1_763_716_562.25, client="10.0.0.7", method="GET",
                      path="/a?b=1", http_version="1.1", status=200, size=512,
                      duration=0.0031, referer="https://ex.com/", user_agent="curl/8")


def test_default_text_line() -> None:
    """The default line is NCSA combined plus the duration in milliseconds."""
    assert format_text(RECORD) == ('10.0.0.7 - - [21/Nov/2025:09:16:02 +0000] "GET /a?b=1 '
                                   'HTTP/1.1" 200 512 "https://ex.com/" "curl/8" 3.1ms')


def test_custom_template() -> None:
    """A --access-log-format template may use any of the documented fields."""
    assert format_text(RECORD, "{status} {method} {path} {duration_ms:.0f}") == \
        "200 GET /a?b=1 3"


def test_json_line() -> None:
    """The JSON line is one object with typed fields."""
    line = format_json(RECORD)
    assert "\n" not in line
    assert json.loads(line) == {
        "time": "2025-11-21T09:16:02.250Z", "client": "10.0.0.7", "method": "GET",
        "path": "/a?b=1", "http_version": "1.1", "status": 200, "size": 512,
        "referer": "https://ex.com/", "user_agent": "curl/8", "duration_ms": 3.1,
        "protocol": "http",
    }


def test_missing_values_are_dashes_or_null() -> None:
    """An unknown client or absent headers print as '-' (text) and null (JSON)."""
    record = AccessRecord(0.0, None, "GET", "/", "1.0", 404, 0, 0.0)
    assert format_text(record).startswith('- - - [')
    assert '"-" "-"' in format_text(record)
    data = json.loads(format_json(record))
    assert (data["client"], data["referer"], data["user_agent"]) == (None, None, None)


@given(st.text(max_size=40), st.text(max_size=40))
def test_client_values_cannot_break_the_line(path: str, agent: str) -> None:
    """Quotes, newlines and control characters from the client are escaped."""
    record = AccessRecord(0.0, "1.2.3.4", "GET", path, "1.1", 200, 0, 0.0, user_agent=agent)
    line = format_text(record)
    quoted = r'"(?:[^"\\\x00-\x1f]|\\.)*"'
    shape = rf"\S+ - - \[[^\]]+\] {quoted} 200 0 {quoted} {quoted} \S+ms"
    assert re.fullmatch(shape, line), line
    assert json.loads(format_json(record))["path"] == path


@pytest.mark.parametrize(("template", "match"), [
    ("{nope}", "unknown field"),
    ("{status", "malformed"),
    ("{status:.2f:x}", "cannot be applied"),
])
def test_bad_templates_are_refused(template: str, match: str) -> None:
    """A template with unknown fields or bad syntax fails at startup, naming the problem."""
    with pytest.raises(ValueError, match=match):
        check_template(template)
