"""Priority 2: the HTTP bridge, http.request -> Django views -> http.response (+ chunks)."""

from __future__ import annotations

import hashlib

import pytest
from django.core import signals as django_signals
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client as DjangoClient
from django.test import override_settings

from asgi_spec import formats
from tests.django.project.views import BIG_FILE
from worker.django import get_channel_layer
from worker.django.handler import CHUNK_SIZE, view_consumer
from worker.django.testing import Client, apply_routes
from worker.message import Message
from worker.routing import route

UPLOAD = bytes(range(256)) * 40  # 10 KB: many body chunks at the sizes used below


def upload_data():
    return {"name": "report", "attachment": SimpleUploadedFile("data.bin", UPLOAD)}


#: (method, path, data): the sample of views whose results must match.
SAMPLE = [
    ("get", "/plain/", None),
    ("get", "/json/?q=caf%C3%A9", None),
    ("get", "/redirect/", None),
    ("get", "/nope/", None),  # 404
    ("get", "/error/", None),  # 500
    ("get", "/cookies/", None),
    ("get", "/stream/", None),
    ("get", "/file/", None),
    ("post", "/upload/", upload_data),
]


def django_result(method, path, data):
    client = DjangoClient(raise_request_exception=False)
    response = client.get(path) if method == "get" else client.post(path, data=data())
    content = b"".join(response) if response.streaming else response.content
    headers = {k.lower(): v for k, v in response.headers.items()}
    cookies = {k: m.OutputString() for k, m in response.cookies.items()}
    return response.status_code, headers, cookies, content


def bridge_result(method, path, data):
    client = Client()
    if method == "get":
        response = client.get(path)
    else:
        response = client.post(path, data=data(), body_chunk_size=1000)
    cookies = {k: m.OutputString() for k, m in response.cookies.items()}
    return response.status_code, response.headers, cookies, response.content


@pytest.mark.parametrize("method, path, data", SAMPLE, ids=[p for _, p, _ in SAMPLE])
def test_django_test_client_and_bridge_give_the_same_results(db, method, path, data):
    """For a sample of views (plain, JSON, redirect, 404, 500, cookies, streaming, file,
    multipart upload streamed over body_channel), the Django test client's status, headers,
    cookies and body equal those that come back over the bridge."""
    expected = django_result(method, path, data)
    got = bridge_result(method, path, data)
    assert got[0] == expected[0]
    assert got[1] == expected[1]
    assert got[2] == expected[2]
    assert got[3] == expected[3]


def test_upload_arrives_whole_through_the_body_channel(db):
    """A multipart upload sent in 1000-byte body chunks reaches the view intact."""
    response = Client().post("/upload/", data=upload_data(), body_chunk_size=1000)
    assert response.status_code == 200
    body = response.json()
    assert body["fields"] == {"name": "report"}
    assert body["files"]["attachment"] == {
        "name": "data.bin", "size": len(UPLOAD), "sha256": hashlib.sha256(UPLOAD).hexdigest()}


def replies_for(path, **kwargs):
    return Client().get(path, **kwargs).replies


def test_every_reply_passes_the_format_validators_and_is_bounded():
    """Replies are a Response then Chunks, each valid per asgi_spec.formats, with at most
    CHUNK_SIZE bytes of content, the last without more_content."""
    for path in ("/plain/", "/file/", "/stream/", "/nope/"):
        replies = replies_for(path)
        for index, reply in enumerate(replies):
            formats.validate_http_reply(reply, started=index > 0)
            assert len(reply.get("content", b"")) <= CHUNK_SIZE
            assert reply.get("more_content", False) is (index < len(replies) - 1)


def test_a_large_file_response_is_sent_in_several_bounded_chunks():
    """FileResponse of 768,000 bytes arrives whole, in replies of at most 256 KiB."""
    response = Client().get("/file/")
    assert response.content == BIG_FILE
    sizes = [len(r.get("content", b"")) for r in response.replies]
    assert sizes == [CHUNK_SIZE, CHUNK_SIZE, len(BIG_FILE) - 2 * CHUNK_SIZE]


def test_a_file_response_ends_with_its_last_block():
    """A FileResponse's head travels with its first block and its last block ends the
    response: no empty chunk trails after the Content-Length bytes."""
    replies = Client().get("/file/").replies
    assert replies[0]["status"] == 200 and replies[0]["content"]
    assert replies[-1]["content"] and replies[-1]["more_content"] is False


def test_a_streaming_response_sends_its_head_first_and_ends_with_an_empty_chunk():
    """StreamingHttpResponse: the head goes out before any piece, each piece is a chunk,
    and an empty chunk without more_content ends the response."""
    replies = replies_for("/stream/")
    assert replies[0]["status"] == 200 and replies[0]["content"] == b""
    assert [r["content"] for r in replies[1:-1]] == [f"line {n}\n".encode() for n in range(5)]
    assert replies[-1] == {"content": b"", "more_content": False}


def test_each_cookie_is_its_own_set_cookie_header():
    """Two cookies give two Set-Cookie headers; other headers pass through."""
    response = Client().get("/cookies/")
    set_cookies = [v for n, v in response.header_list if n == "Set-Cookie"]
    assert len(set_cookies) == 2
    assert any(v.startswith("flavour=oatmeal;") and "HttpOnly" in v for v in set_cookies)
    assert response.headers["x-custom"] == "yes"


def test_meta_follows_wsgi():
    """META has SCRIPT_NAME from root_path, PATH_INFO without it, QUERY_STRING,
    REMOTE_ADDR/PORT, SERVER_NAME/PORT, HTTP_* headers, CONTENT_*, and the URL scheme."""
    client = Client()
    response = client.request(
        "POST", "/app/meta/?a=1&b=%C3%A9", b"x=1", root_path="/app", scheme="https",
        headers=[("X-Test", "one"), ("X-Test", "two"), ("X_Smuggled", "no")],
        content_type="application/x-www-form-urlencoded")
    body = response.json()
    meta = body["meta"]
    assert meta["SCRIPT_NAME"] == "/app" and meta["PATH_INFO"] == "/meta/"
    assert body["path"] == "/app/meta/" and body["path_info"] == "/meta/"
    assert meta["QUERY_STRING"] == "a=1&b=%C3%A9" and body["get"] == {"a": "1", "b": "é"}
    assert (meta["REMOTE_ADDR"], meta["REMOTE_PORT"]) == ("127.0.0.1", "54321")
    assert (meta["SERVER_NAME"], meta["SERVER_PORT"]) == ("testserver", "80")
    assert meta["HTTP_X_TEST"] == "one,two"
    assert meta["CONTENT_TYPE"] == "application/x-www-form-urlencoded"
    assert meta["CONTENT_LENGTH"] == "3" and body["body"] == "x=1"
    assert meta["SERVER_PROTOCOL"] == "HTTP/1.1" and meta["REQUEST_METHOD"] == "POST"
    assert body["scheme"] == "https" and body["is_secure"] is True
    assert body["uri"] == "https://testserver/app/meta/?a=1&b=%C3%A9"
    assert "HTTP_X_SMUGGLED" not in meta and meta["HTTP_X_TEST"] != "no"


def test_urls_reversed_in_views_include_the_root_path():
    """Inside a view, reverse() includes root_path (the script prefix is set per request)."""
    client = Client()
    assert client.get("/app/where/", root_path="/app").json() == {"plain": "/app/plain/"}
    assert client.get("/where/").json() == {"plain": "/plain/"}


def test_a_body_that_stops_arriving_gets_408():
    """An http.request whose body_channel never delivers the rest is answered 408 after
    SWITCHBOARD_BODY_TIMEOUT."""
    layer = get_channel_layer()
    client = Client()
    with override_settings(SWITCHBOARD_BODY_TIMEOUT=0.05):
        client.send_and_consume("http.request", {
            "reply_channel": client.reply_channel, "http_version": "1.1", "method": "POST",
            "path": "/upload/", "query_string": b"", "headers": [], "body": b"partial",
            "body_channel": layer.new_channel("http.request.body?")})
    reply = client.receive()
    assert reply["status"] == 408
    assert b"stopped arriving" in reply["content"]


def test_a_closed_body_chunk_means_no_reply_and_no_view_call():
    """A body chunk with closed (the client left) ends the exchange: no reply at all."""
    layer = get_channel_layer()
    client = Client()
    body_channel = layer.new_channel("http.request.body?")
    layer.send(body_channel, {"content": b"", "closed": True})
    client.send_and_consume("http.request", {
        "reply_channel": client.reply_channel, "http_version": "1.1", "method": "POST",
        "path": "/upload/", "query_string": b"", "headers": [], "body": b"a",
        "body_channel": body_channel})
    assert client.receive() is None


def run_view_consumer(content):
    layer = get_channel_layer().layer
    view_consumer(Message(content, "http.request", layer))
    _, reply = layer.receive([content["reply_channel"].split("!")[0] + "!"])
    return reply


def test_undecodable_input_gets_400():
    """A path that cannot be encoded (a lone surrogate) and a malformed message are
    answered 400, not 500."""
    reply = run_view_consumer({"reply_channel": "t!a", "http_version": "1.1",
                               "method": "GET", "path": "/\udcff/", "query_string": b"",
                               "headers": []})
    assert reply["status"] == 400
    reply = run_view_consumer({"reply_channel": "t!b", "http_version": "1.1",
                               "path": "/plain/", "query_string": b"", "headers": []})
    assert reply["status"] == 400 and b"method" in reply["content"]


def test_view_errors_give_the_technical_500_page_with_debug():
    """With DEBUG a failing view answers Django's technical 500 (naming the exception)."""
    with override_settings(DEBUG=True):
        response = Client().get("/error/")
    assert response.status_code == 500
    assert b"ValueError" in response.content
    assert b"this view always fails" in response.content


def test_view_errors_give_the_plain_500_page_without_debug():
    """Without DEBUG a failing view answers the project's 500 page, with no traceback."""
    response = Client().get("/error/")
    assert response.status_code == 500
    assert b"this view always fails" not in response.content


def test_request_started_and_finished_are_sent_once_per_request():
    """request_started and request_finished (which recycle DB connections) are sent
    once each per request."""
    events = []

    def started(**kwargs):
        events.append("started")

    def finished(**kwargs):
        events.append("finished")

    django_signals.request_started.connect(started)
    django_signals.request_finished.connect(finished)
    try:
        Client().get("/stream/")
        Client().get("/plain/")
    finally:
        django_signals.request_started.disconnect(started)
        django_signals.request_finished.disconnect(finished)
    assert events == ["started", "finished"] * 2


def test_head_requests_get_headers_but_no_body():
    """HEAD is answered with the GET headers and no body."""
    response = Client().request("HEAD", "/plain/")
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["content-type"] == "text/plain"


def test_sessions_work_over_the_bridge(db):
    """The session cookie a view sets brings the same session back on the next request."""
    client = Client()
    assert client.get("/session/").json() == {"count": 1}
    assert client.get("/session/").json() == {"count": 2}


def test_csrf_protection_applies_over_the_bridge():
    """CsrfViewMiddleware runs: a POST without a token is refused 403."""
    assert Client().post("/form/", data="name=x",
                         content_type="application/x-www-form-urlencoded").status_code == 403


def test_project_routes_take_precedence_over_the_views():
    """An http.request route in the routing takes its path; other paths still reach the
    Django views."""

    def poll(message):
        message.reply_channel.send({"status": 200, "content": b"from a consumer"})

    with apply_routes([route("http.request", poll, path=r"^/poll/$")]):
        client = Client()
        assert client.get("/poll/").content == b"from a consumer"
        assert client.get("/plain/").content == b"hello world"
