"""Tests for ``asgi_spec.formats``: the ASGI 1.x HTTP/WebSocket message validators."""

from __future__ import annotations

import functools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asgi_spec import formats
from asgi_spec.exceptions import MessageFormatError
from asgi_spec.formats import (
    close_code,
    is_http_response_start,
    is_valid_close_code,
    validate_asgi_delay,
    validate_http_disconnect,
    validate_http_reply,
    validate_http_request,
    validate_http_request_body,
    validate_http_response,
    validate_http_response_chunk,
    validate_message,
    validate_websocket_connect,
    validate_websocket_disconnect,
    validate_websocket_receive,
    validate_websocket_reply,
    with_defaults,
)

REPLY = "daphne.response.abcdefghij!klmnopqrst"

HTTP_REQUEST: dict[str, Any] = {
    "reply_channel": REPLY,
    "http_version": "1.1",
    "method": "GET",
    "scheme": "https",
    "path": "/chat/room 1/",
    "query_string": b"a=1&b=%20",
    "root_path": "",
    "headers": [[b"host", b"example.com"], [b"cookie", b"a=1"], [b"cookie", b"b=2"]],
    "body": b"",
    "body_channel": "http.request.body?XkqpAbCd",
    "client": ["127.0.0.1", 52311],
    "server": ["10.0.0.1", 80],
}
HTTP_REQUEST_MINIMAL: dict[str, Any] = {
    "reply_channel": REPLY,
    "http_version": "1.0",
    "method": "M-SEARCH",
    "path": "",
    "query_string": b"",
    "headers": [],
}
HTTP_REQUEST_BODY: dict[str, Any] = {"content": b"chunk", "closed": False, "more_content": True}
HTTP_RESPONSE: dict[str, Any] = {
    "status": 200,
    "headers": [(b"Content-Type", b"text/plain"), (b"Set-Cookie", b"a=1"), (b"set-cookie", b"b")],
    "content": b"hello",
    "more_content": False,
}
HTTP_RESPONSE_CHUNK: dict[str, Any] = {"content": b"more", "more_content": True}
HTTP_DISCONNECT: dict[str, Any] = {"reply_channel": REPLY, "path": "/"}
WEBSOCKET_CONNECT: dict[str, Any] = {
    "reply_channel": REPLY,
    "scheme": "wss",
    "path": "/ws/",
    "query_string": b"",
    "root_path": "/app",
    "headers": [[b"origin", b"https://example.com"]],
    "client": ("::1", 40000),
    "server": None,
    "order": 0,
    "subprotocols": ["chat", "v2.json"],
}
WEBSOCKET_RECEIVE: dict[str, Any] = {"reply_channel": REPLY, "path": "/ws/", "text": "hi",
                                     "order": 1}
WEBSOCKET_DISCONNECT: dict[str, Any] = {"reply_channel": REPLY, "code": 1006, "path": "/ws/",
                                        "order": 7}
WEBSOCKET_REPLY: dict[str, Any] = {"bytes": b"\x00\x01", "accept": True, "subprotocol": "chat"}
ASGI_DELAY: dict[str, Any] = {"channel": "websocket.send!x", "delay": 1500,
                              "content": {"text": "later"}}

VALID = [
    (validate_http_request, HTTP_REQUEST),
    (validate_http_request, HTTP_REQUEST_MINIMAL),
    (validate_http_request, {**HTTP_REQUEST, "http_version": "2", "path": "*", "client": None}),
    (validate_http_request, {**HTTP_REQUEST, "headers": ((b"x-a", b""),), "method": "PATCH"}),
    (validate_http_request_body, HTTP_REQUEST_BODY),
    (validate_http_request_body, {"content": b""}),
    (validate_http_response, HTTP_RESPONSE),
    (validate_http_response, {"status": 404}),
    (validate_http_response, {"status": 101, "headers": [], "content": b""}),
    (validate_http_response_chunk, HTTP_RESPONSE_CHUNK),
    (validate_http_response_chunk, {"content": b""}),
    (validate_http_disconnect, HTTP_DISCONNECT),
    (validate_websocket_connect, WEBSOCKET_CONNECT),
    (validate_websocket_connect, {"reply_channel": REPLY, "path": "/", "query_string": b"x",
                                  "headers": [], "order": 0}),
    (validate_websocket_receive, WEBSOCKET_RECEIVE),
    (validate_websocket_receive, {**WEBSOCKET_RECEIVE, "text": None, "bytes": b"\xff"}),
    (validate_websocket_disconnect, WEBSOCKET_DISCONNECT),
    (validate_websocket_reply, WEBSOCKET_REPLY),
    (validate_websocket_reply, {}),
    (validate_websocket_reply, {"text": "bye", "close": 4001}),
    (validate_websocket_reply, {"close": True}),
    (validate_websocket_reply, {"accept": False, "text": None, "bytes": None}),
    (validate_asgi_delay, ASGI_DELAY),
    (validate_asgi_delay, {**ASGI_DELAY, "delay": 0}),
]


@pytest.mark.parametrize(("validate", "message"), VALID)
def test_valid_messages_pass_unchanged(validate, message):
    """Every well-formed example validates and comes back as the very same object."""
    before = repr(message)
    assert validate(message) is message
    assert repr(message) == before


# (validator, valid base, field, bad value; _DROP removes the key)
_DROP = object()
BAD_FIELDS = [
    (validate_http_request, HTTP_REQUEST, "reply_channel", _DROP),
    (validate_http_request, HTTP_REQUEST, "reply_channel", "bad name!!"),
    (validate_http_request, HTTP_REQUEST, "reply_channel", b"daphne.response!x"),
    (validate_http_request, HTTP_REQUEST, "http_version", "1.2"),
    (validate_http_request, HTTP_REQUEST, "http_version", 1.1),
    (validate_http_request, HTTP_REQUEST, "http_version", _DROP),
    (validate_http_request, HTTP_REQUEST, "method", "get"),
    (validate_http_request, HTTP_REQUEST, "method", "GE T"),
    (validate_http_request, HTTP_REQUEST, "method", ""),
    (validate_http_request, HTTP_REQUEST, "method", b"GET"),
    (validate_http_request, HTTP_REQUEST, "scheme", 7),
    (validate_http_request, HTTP_REQUEST, "scheme", "ht tp"),
    (validate_http_request, HTTP_REQUEST, "path", b"/"),
    (validate_http_request, HTTP_REQUEST, "path", "relative"),
    (validate_http_request, HTTP_REQUEST, "path", _DROP),
    (validate_http_request, HTTP_REQUEST, "query_string", "a=1"),
    (validate_http_request, HTTP_REQUEST, "query_string", _DROP),
    (validate_http_request, HTTP_REQUEST, "root_path", None),
    (validate_http_request, HTTP_REQUEST, "headers", {b"host": b"x"}),
    (validate_http_request, HTTP_REQUEST, "headers", [[b"host"]]),
    (validate_http_request, HTTP_REQUEST, "headers", [["host", "x"]]),
    (validate_http_request, HTTP_REQUEST, "headers", [[b"Host", b"x"]]),
    (validate_http_request, HTTP_REQUEST, "headers", [[b"", b"x"]]),
    (validate_http_request, HTTP_REQUEST, "headers", _DROP),
    (validate_http_request, HTTP_REQUEST, "body", "text"),
    (validate_http_request, HTTP_REQUEST, "body_channel", "http.request.body!x"),
    (validate_http_request, HTTP_REQUEST, "body_channel", "http.request.body?"),
    (validate_http_request, HTTP_REQUEST, "client", ["1.2.3.4"]),
    (validate_http_request, HTTP_REQUEST, "client", [b"1.2.3.4", 80]),
    (validate_http_request, HTTP_REQUEST, "client", ["1.2.3.4", 70000]),
    (validate_http_request, HTTP_REQUEST, "server", ["1.2.3.4", True]),
    (validate_http_request, HTTP_REQUEST, "server", "1.2.3.4:80"),
    (validate_http_request_body, HTTP_REQUEST_BODY, "content", _DROP),
    (validate_http_request_body, HTTP_REQUEST_BODY, "content", "text"),
    (validate_http_request_body, HTTP_REQUEST_BODY, "closed", 1),
    (validate_http_request_body, HTTP_REQUEST_BODY, "more_content", "yes"),
    (validate_http_response, HTTP_RESPONSE, "status", "200"),
    (validate_http_response, HTTP_RESPONSE, "status", 99),
    (validate_http_response, HTTP_RESPONSE, "status", 1000),
    (validate_http_response, HTTP_RESPONSE, "status", True),
    (validate_http_response, HTTP_RESPONSE, "headers", [[b"x-a", b"1\r\nSet-Cookie: evil"]]),
    (validate_http_response, HTTP_RESPONSE, "headers", [[b"x-a\n", b"1"]]),
    (validate_http_response, HTTP_RESPONSE, "headers", [[b"x-a", b"\x00"]]),
    (validate_http_response, HTTP_RESPONSE, "headers", [[b"X A", b"1"]]),
    (validate_http_response, HTTP_RESPONSE, "content", "hello"),
    (validate_http_response, HTTP_RESPONSE, "more_content", None),
    (validate_http_response, HTTP_RESPONSE, "body", b"typo"),
    (validate_http_response_chunk, HTTP_RESPONSE_CHUNK, "content", _DROP),
    (validate_http_response_chunk, HTTP_RESPONSE_CHUNK, "content", bytearray(b"x")),
    (validate_http_response_chunk, HTTP_RESPONSE_CHUNK, "more_content", 0),
    (validate_http_response_chunk, HTTP_RESPONSE_CHUNK, "status", 200),
    (validate_http_response_chunk, HTTP_RESPONSE_CHUNK, "extra", 1),
    (validate_http_disconnect, HTTP_DISCONNECT, "reply_channel", None),
    (validate_http_disconnect, HTTP_DISCONNECT, "path", None),
    (validate_websocket_connect, WEBSOCKET_CONNECT, "reply_channel", "x!"),
    (validate_websocket_connect, WEBSOCKET_CONNECT, "scheme", b"ws"),
    (validate_websocket_connect, WEBSOCKET_CONNECT, "path", _DROP),
    (validate_websocket_connect, WEBSOCKET_CONNECT, "query_string", ""),
    (validate_websocket_connect, WEBSOCKET_CONNECT, "root_path", b""),
    (validate_websocket_connect, WEBSOCKET_CONNECT, "headers", [[b"Origin", b"x"]]),
    (validate_websocket_connect, WEBSOCKET_CONNECT, "client", ["h", -1]),
    (validate_websocket_connect, WEBSOCKET_CONNECT, "server", ["h", 1, 2]),
    (validate_websocket_connect, WEBSOCKET_CONNECT, "order", 1),
    (validate_websocket_connect, WEBSOCKET_CONNECT, "order", False),
    (validate_websocket_connect, WEBSOCKET_CONNECT, "order", _DROP),
    (validate_websocket_connect, WEBSOCKET_CONNECT, "subprotocols", "chat"),
    (validate_websocket_connect, WEBSOCKET_CONNECT, "subprotocols", ["a b"]),
    (validate_websocket_receive, WEBSOCKET_RECEIVE, "reply_channel", _DROP),
    (validate_websocket_receive, WEBSOCKET_RECEIVE, "path", 3),
    (validate_websocket_receive, WEBSOCKET_RECEIVE, "text", b"hi"),
    (validate_websocket_receive, WEBSOCKET_RECEIVE, "order", 0),
    (validate_websocket_receive, WEBSOCKET_RECEIVE, "order", "1"),
    (validate_websocket_disconnect, WEBSOCKET_DISCONNECT, "reply_channel", 5),
    (validate_websocket_disconnect, WEBSOCKET_DISCONNECT, "code", "1000"),
    (validate_websocket_disconnect, WEBSOCKET_DISCONNECT, "code", 999),
    (validate_websocket_disconnect, WEBSOCKET_DISCONNECT, "code", _DROP),
    (validate_websocket_disconnect, WEBSOCKET_DISCONNECT, "path", _DROP),
    (validate_websocket_disconnect, WEBSOCKET_DISCONNECT, "order", 0),
    (validate_websocket_reply, WEBSOCKET_REPLY, "bytes", "text"),
    (validate_websocket_reply, {"text": "x"}, "text", b"x"),
    (validate_websocket_reply, WEBSOCKET_REPLY, "close", 1005),
    (validate_websocket_reply, WEBSOCKET_REPLY, "close", 1015),
    (validate_websocket_reply, WEBSOCKET_REPLY, "close", 5000),
    (validate_websocket_reply, WEBSOCKET_REPLY, "close", "1000"),
    (validate_websocket_reply, WEBSOCKET_REPLY, "close", None),
    (validate_websocket_reply, WEBSOCKET_REPLY, "accept", 1),
    (validate_websocket_reply, WEBSOCKET_REPLY, "subprotocol", 5),
    (validate_websocket_reply, WEBSOCKET_REPLY, "subprotocol", "a,b"),
    (validate_websocket_reply, WEBSOCKET_REPLY, "close_code", 1000),
    (validate_asgi_delay, ASGI_DELAY, "channel", _DROP),
    (validate_asgi_delay, ASGI_DELAY, "channel", "no spaces"),
    (validate_asgi_delay, ASGI_DELAY, "delay", -1),
    (validate_asgi_delay, ASGI_DELAY, "delay", 1.5),
    (validate_asgi_delay, ASGI_DELAY, "delay", _DROP),
    (validate_asgi_delay, ASGI_DELAY, "content", [1]),
    (validate_asgi_delay, ASGI_DELAY, "content", _DROP),
]


def _with(base: dict[str, Any], field: str, value: object) -> dict[str, Any]:
    message = dict(base)
    if value is _DROP:
        del message[field]
    else:
        message[field] = value
    return message


@pytest.mark.parametrize(
    ("validate", "base", "field", "value"),
    BAD_FIELDS,
    ids=[f"{v.__name__}-{f}-{'missing' if x is _DROP else repr(x)[:30]}"
         for v, _, f, x in BAD_FIELDS],
)
def test_bad_field_is_named(validate, base, field, value):
    """A wrong or missing field raises MessageFormatError whose .field and text name it."""
    with pytest.raises(MessageFormatError) as info:
        validate(_with(base, field, value))
    assert info.value.field == field
    assert f"field {field!r}" in str(info.value)
    assert info.value.problem


def test_error_text_names_field_and_expectation():
    """The error reads '<type> field <name>: <what was expected>, got <value>'."""
    with pytest.raises(MessageFormatError) as info:
        validate_http_request({**HTTP_REQUEST, "method": "get"})
    assert str(info.value) == "http.request field 'method': must be an upper-case str, got 'get'"
    assert info.value.message_type == "http.request"


ALL_VALIDATORS = [
    validate_http_request,
    validate_http_request_body,
    validate_http_response,
    validate_http_response_chunk,
    validate_http_disconnect,
    validate_websocket_connect,
    validate_websocket_receive,
    validate_websocket_disconnect,
    validate_websocket_reply,
    validate_asgi_delay,
    functools.partial(validate_http_reply, started=False),
    functools.partial(validate_http_reply, started=True),
]


@pytest.mark.parametrize("validate", ALL_VALIDATORS)
@pytest.mark.parametrize("message", [None, [], "http.request", b"{}", 42])
def test_non_dict_message_has_no_field(validate, message):
    """A message that is not a dict is rejected with field None."""
    with pytest.raises(MessageFormatError) as info:
        validate(message)
    assert info.value.field is None
    assert "must be a dict" in str(info.value)


@pytest.mark.parametrize("frame", [{"text": ""}, {"bytes": b""}])
def test_empty_websocket_frames_are_accepted(frame):
    """Empty text and empty bytes are legal frames, on receive and on send."""
    assert validate_websocket_receive({**HTTP_DISCONNECT, "order": 1, **frame})
    assert validate_websocket_reply(frame) == frame


@pytest.mark.parametrize("validate", [validate_websocket_receive, validate_websocket_reply])
def test_websocket_bytes_and_text_together_rejected(validate):
    """A frame carrying both bytes and text is an error on receive and on send."""
    message = {**WEBSOCKET_RECEIVE, "bytes": b"x", "text": "x"}
    if validate is validate_websocket_reply:
        message = {"bytes": b"", "text": ""}
    with pytest.raises(MessageFormatError, match="at most one of 'bytes' and 'text'"):
        validate(message)


def test_websocket_receive_needs_a_frame():
    """websocket.receive without bytes or text (or with both None) is rejected."""
    message = {**WEBSOCKET_RECEIVE, "text": None}
    with pytest.raises(MessageFormatError, match="exactly one") as info:
        validate_websocket_receive(message)
    assert info.value.field == "bytes"


@pytest.mark.parametrize("value", [b"a\rb", b"a\nb", b"a\r\nb", b"\x00"])
@pytest.mark.parametrize("validate", [validate_http_request, validate_http_response])
def test_header_injection_rejected(validate, value):
    """CR, LF or NUL in a header value or name is rejected (header injection)."""
    base = HTTP_REQUEST if validate is validate_http_request else HTTP_RESPONSE
    for header in ([b"x-a", value], [b"x-a" + value, b"v"]):
        with pytest.raises(MessageFormatError) as info:
            validate({**base, "headers": [[b"host", b"ok"], header]})
        assert info.value.field == "headers"
        assert "entry 1" in str(info.value)


def test_response_header_names_may_use_any_case():
    """Response header names are not forced to lower case; request ones are."""
    headers = [[b"X-Frame-Options", b"DENY"]]
    validate_http_response({"status": 200, "headers": headers})
    with pytest.raises(MessageFormatError, match="lower-case"):
        validate_http_request({**HTTP_REQUEST, "headers": headers})


def test_unknown_keys_allowed_on_request_side():
    """Messages sent on named channels may carry unknown keys (forward compatible)."""
    extra = {"x_future": [1, 2]}
    for validate, base in [
        (validate_http_request, HTTP_REQUEST),
        (validate_http_request_body, HTTP_REQUEST_BODY),
        (validate_http_disconnect, HTTP_DISCONNECT),
        (validate_websocket_connect, WEBSOCKET_CONNECT),
        (validate_websocket_receive, WEBSOCKET_RECEIVE),
        (validate_websocket_disconnect, WEBSOCKET_DISCONNECT),
        (validate_asgi_delay, ASGI_DELAY),
    ]:
        validate({**base, **extra})


def test_unknown_reply_keys_are_named():
    """An unknown reply key is an error listing every unknown key, with a hint for 'body'."""
    with pytest.raises(MessageFormatError) as info:
        validate_websocket_reply({"text": "x", "zeta": 1, "alpha": 2})
    assert info.value.field == "alpha"
    assert "'alpha', 'zeta'" in str(info.value)
    with pytest.raises(MessageFormatError, match="'content'") as info:
        validate_http_response({"status": 200, "body": b"x"})
    assert info.value.field == "body"


def test_http_reply_sequence():
    """A Response must come first and only once; Chunks only after it."""
    response, chunk = {"status": 200, "more_content": True}, {"content": b"x"}
    assert validate_http_reply(response, started=False) is response
    assert validate_http_reply(chunk, started=True) is chunk
    with pytest.raises(MessageFormatError, match="first reply must be a Response") as info:
        validate_http_reply(chunk, started=False)
    assert info.value.field == "status"
    with pytest.raises(MessageFormatError, match="already started") as info:
        validate_http_reply(response, started=True)
    assert info.value.field == "status"
    with pytest.raises(MessageFormatError) as info:
        validate_http_reply({"status": 200, "content": "s"}, started=False)
    assert info.value.field == "content"


def test_is_http_response_start():
    """A reply is a Response start exactly when it is a dict holding 'status'."""
    assert is_http_response_start({"status": 200})
    assert not is_http_response_start({"content": b""})
    assert not is_http_response_start(["status"])


@pytest.mark.parametrize(
    ("reply", "code"),
    [({}, None), ({"close": False}, None), ({"close": True}, 1000), ({"close": 1001}, 1001),
     ({"close": 4999, "text": "bye"}, 4999), ({"close": 3000}, 3000), ({"close": 1014}, 1014)],
)
def test_close_code(reply, code):
    """close_code maps absent/False to None, True to 1000 and passes valid ints through."""
    assert close_code(reply) == code


@pytest.mark.parametrize("bad", [1004, 1005, 1006, 1015, 2999, 5000, 0, -1, "1000", None, 1.0])
def test_close_code_rejects_invalid(bad):
    """close_code and is_valid_close_code refuse reserved, out-of-range or non-int codes."""
    assert not is_valid_close_code(bad)
    with pytest.raises(MessageFormatError) as info:
        close_code({"close": bad})
    assert info.value.field == "close"


def test_close_code_table():
    """WEBSOCKET_CLOSE_CODES covers exactly 1000-1003, 1007-1014 and 3000-4999."""
    valid = {c for r in formats.WEBSOCKET_CLOSE_CODES for c in r}
    assert valid == set(range(1000, 1004)) | set(range(1007, 1015)) | set(range(3000, 5000))
    assert all(is_valid_close_code(c) for c in valid)
    assert not is_valid_close_code(True)


def test_channel_constants():
    """The channel-name constants are the ASGI 1 names."""
    assert formats.HTTP_REQUEST == "http.request"
    assert formats.HTTP_REQUEST_BODY == "http.request.body?"
    assert formats.HTTP_DISCONNECT == "http.disconnect"
    assert formats.WEBSOCKET_CONNECT == "websocket.connect"
    assert formats.WEBSOCKET_RECEIVE == "websocket.receive"
    assert formats.WEBSOCKET_DISCONNECT == "websocket.disconnect"
    assert formats.ASGI_DELAY == "asgi.delay"


def test_validate_message_dispatches_by_channel():
    """validate_message picks the validator from the channel name; other channels pass."""
    assert validate_message("http.request", HTTP_REQUEST) is HTTP_REQUEST
    assert validate_message("http.request.body?abc", HTTP_REQUEST_BODY) is HTTP_REQUEST_BODY
    with pytest.raises(MessageFormatError) as info:
        validate_message("http.request.body?abc", {"content": "s"})
    assert info.value.message_type == "http.request.body"
    with pytest.raises(MessageFormatError):
        validate_message("websocket.receive", {**WEBSOCKET_RECEIVE, "order": 0})
    odd = {"anything": 1}
    assert validate_message("chat.join", odd) is odd


def test_with_defaults_fills_only_absent_keys():
    """with_defaults returns a copy with absent optional keys filled; the input is untouched."""
    filled = with_defaults("http.request", HTTP_REQUEST_MINIMAL)
    assert filled is not HTTP_REQUEST_MINIMAL and "scheme" not in HTTP_REQUEST_MINIMAL
    assert filled["scheme"] == "http" and filled["body"] == b"" and filled["client"] is None
    assert filled["method"] == "M-SEARCH"
    validate_http_request(filled)
    kept = with_defaults("websocket.connect", WEBSOCKET_CONNECT)
    assert kept == {**WEBSOCKET_CONNECT}
    a, b = with_defaults("http.response", {"status": 200}), with_defaults("http.response", {})
    a["headers"].append([b"x", b"y"])
    assert b["headers"] == []
    with pytest.raises(KeyError):
        with_defaults("no.such.type", {})


# -- property tests ------------------------------------------------------------------

_NAME = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.",
                min_size=1, max_size=20)
_TOKEN_CHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz"
_header_name = st.text(_TOKEN_CHARS, min_size=1, max_size=20).map(str.encode)
_header_value = st.binary(max_size=40).filter(lambda v: not set(v) & {0, 10, 13})
_address = st.none() | st.tuples(st.text(max_size=20), st.integers(0, 65535)).map(list)


@st.composite
def http_requests(draw) -> dict[str, Any]:
    """Valid http.request messages, with every optional key present or not."""
    message: dict[str, Any] = {
        "reply_channel": draw(st.tuples(_NAME, _NAME).map("!".join)),
        "http_version": draw(st.sampled_from(["1.0", "1.1", "2"])),
        "method": draw(st.text(_TOKEN_CHARS, min_size=1, max_size=10).map(str.upper)),
        "path": draw(st.just("") | st.text(max_size=30).map(lambda p: "/" + p)),
        "query_string": draw(st.binary(max_size=30)),
        "headers": draw(st.lists(st.tuples(_header_name, _header_value).map(list), max_size=6)),
    }
    optional = {
        "scheme": st.sampled_from(["http", "https", "svn+ssh"]),
        "root_path": st.text(max_size=10),
        "body": st.binary(max_size=50),
        "body_channel": st.none() | _NAME.map(lambda n: f"http.request.body?{n}"),
        "client": _address,
        "server": _address,
    }
    for key, strategy in optional.items():
        if draw(st.booleans()):
            message[key] = draw(strategy)
    return message


@given(http_requests())
def test_generated_http_requests_validate(message):
    """Any http.request built from the valid-message strategy validates unchanged."""
    assert validate_http_request(message) is message
    assert validate_http_request(with_defaults("http.request", message))


_KEYS = sorted({
    "reply_channel", "http_version", "method", "scheme", "path", "query_string", "root_path",
    "headers", "body", "body_channel", "client", "server", "content", "closed", "more_content",
    "status", "code", "order", "bytes", "text", "close", "accept", "subprotocol",
    "subprotocols", "channel", "delay",
})
_scalars = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
            | st.binary(max_size=20) | st.sampled_from(["GET", "/", "1.1", "a!b", "x?y"]))
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=3) | st.tuples(inner, inner)
    | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
_messages = st.dictionaries(st.sampled_from(_KEYS) | st.text(max_size=8), _values, max_size=12)


@settings(max_examples=300)
@given(_messages, st.sampled_from(range(len(ALL_VALIDATORS))))
def test_validators_only_raise_message_format_error(message, index):
    """On arbitrary dicts a validator either returns the message or raises MessageFormatError."""
    validate = ALL_VALIDATORS[index]
    try:
        assert validate(message) is message
    except MessageFormatError as exc:
        assert exc.field is None or isinstance(exc.field, str)
    try:
        close_code(message)
    except MessageFormatError as exc:
        assert exc.field == "close"


_GOOD_NAME = st.sampled_from([b"content-type", b"X-Ok", b"set-cookie", b"a"])
_GOOD_VALUE = st.binary(max_size=6).filter(lambda v: not set(v) & {13, 10, 0})
_BAD_PART = st.one_of(st.sampled_from([b"bad name", b"a:b", b"v\r\n", b"\x00", b""]),
                      st.text(max_size=3), st.none(), st.integers())
_GOOD_PAIR = st.one_of(st.tuples(_GOOD_NAME, _GOOD_VALUE),
                       st.lists(st.one_of(_GOOD_NAME), min_size=2, max_size=2))
_BAD_PAIR = st.one_of(st.tuples(_BAD_PART, _GOOD_VALUE), st.tuples(_GOOD_NAME, _BAD_PART),
                      st.lists(_GOOD_NAME, max_size=3).filter(lambda x: len(x) != 2), _BAD_PART)


def _mostly(good: Any, bad: Any) -> Any:
    """``good`` about three times in four."""
    return st.integers(0, 3).flatmap(lambda k: good if k else bad)


_RESPONSE_VALUE = {
    "status": _mostly(st.integers(min_value=100, max_value=999),
                      st.one_of(st.integers(min_value=50, max_value=1100), st.booleans(),
                                st.floats(allow_nan=False), st.text(max_size=3), st.none())),
    "headers": _mostly(st.lists(_mostly(_GOOD_PAIR, _BAD_PAIR), max_size=3),
                       st.one_of(st.binary(max_size=3), st.none(),
                                 st.tuples(st.tuples(_GOOD_NAME, _GOOD_VALUE)))),
    "content": _mostly(st.binary(max_size=5), st.one_of(st.text(max_size=3), st.none())),
    "more_content": _mostly(st.booleans(), st.one_of(st.integers(0, 1), st.none())),
    "body": st.binary(max_size=3),
}


@st.composite
def _responses(draw: Any) -> Any:
    keys = draw(st.lists(st.sampled_from(["headers", "content", "more_content"]),
                         unique=True, max_size=3))
    if draw(st.integers(0, 9)):
        keys.append("status")
    if not draw(st.integers(0, 9)):
        keys.append("body")
    return {key: draw(_RESPONSE_VALUE[key]) for key in keys}


@settings(max_examples=400)
@given(_responses())
def test_the_fast_response_check_and_the_naming_check_agree(message: Any) -> None:
    """``validate_http_response`` answers the common case in one pass; it accepts
    exactly what the field-by-field check accepts, and what it refuses is named."""
    try:
        formats._check_http_response(message)
        valid = True
    except MessageFormatError:
        valid = False
    assert formats._plain_response(message) is valid
    if valid:
        assert validate_http_response(message) is message
    else:
        with pytest.raises(MessageFormatError):
            validate_http_response(message)


_REPLY_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-2, max_value=5000), st.text(max_size=8),
    st.binary(max_size=8), st.lists(st.integers(), max_size=2),
)


def _verdict(check: Any, message: object) -> object:
    try:
        return check(message) is message
    except MessageFormatError as exc:
        return (exc.field, str(exc))


@given(st.one_of(
    st.dictionaries(st.sampled_from(["text", "bytes", "close", "accept", "subprotocol", 2]),
                    _REPLY_VALUES, max_size=3),
    st.builds(lambda text: {"text": text}, st.text(max_size=16)),
    st.builds(lambda data: {"bytes": data}, st.binary(max_size=16)),
    _REPLY_VALUES,
))
def test_websocket_reply_one_look_agrees_with_the_field_by_field_check(
        message: object) -> None:
    """A lone frame passes in one look; every message gets the verdict the field by
    field check gives (passes, or fails naming the same field)."""
    assert _verdict(validate_websocket_reply, message) == \
        _verdict(formats._websocket_reply_fields, message)


@pytest.mark.parametrize(("message", "frame"), [
    ({"text": "hi"}, "hi"),
    ({"text": ""}, ""),
    ({"bytes": b"\x00"}, b"\x00"),
    ({"text": "hi", "close": True}, None),
    ({"text": None}, None),
    ({"bytes": "not bytes"}, None),
    ({"close": True}, None),
    ({}, None),
    ([("text", "hi")], None),
])
def test_single_frame(message: object, frame: object) -> None:
    """Only a reply that is one frame and nothing else is a single frame."""
    assert formats.single_frame(message) == frame
