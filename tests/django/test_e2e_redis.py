"""The sample project end to end over Redis and over SQLite: interfaceserver + two
runworker processes.

``ChannelLiveServerTestCase`` runs the processes on the session's private redis-server
(the ``redis_url`` fixture; ``RedisEndToEndTests``) or on a temporary SQLite layer file
(``SQLiteEndToEndTests``), and the file test database; the requests are real HTTP and
WebSocket traffic on 127.0.0.1. Both classes run the same checks (``EndToEndChecks``).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
from http.cookies import SimpleCookie
from urllib.parse import urlencode, urlsplit

import pytest
from django.contrib.auth.models import User
from django.test import Client as DjangoClient
from websockets.sync.client import connect

from asgi_spec.layers.redis import RedisChannelLayer
from asgi_spec.layers.sqlite import SQLiteChannelLayer
from tests.django.project.views import BIG_FILE
from worker.django import get_channel_layer
from worker.django.testing import ChannelLiveServerTestCase

pytestmark = pytest.mark.slow  # real processes
TIMEOUT = 10


@pytest.fixture(scope="class", autouse=True)
def redis_layer(request):
    """The live processes of a Redis class use the session's redis-server as their layer."""
    if getattr(request.cls, "layer_class", None) is RedisChannelLayer:
        request.cls.channel_layer_url = request.getfixturevalue("redis_url")


def multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes]]) -> tuple[bytes, str]:
    boundary = "e2e-boundary-5a1f"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
             f"{value}\r\n".encode() for name, value in fields.items()]
    for name, (filename, data) in files.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
                     f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'
                     .encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


class Browser:
    """HTTP over http.client with a cookie jar; redirects are not followed."""

    def __init__(self, base: str) -> None:
        self.host = urlsplit(base).netloc
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None,
                ) -> tuple[http.client.HTTPResponse, bytes]:
        connection = http.client.HTTPConnection(self.host, timeout=TIMEOUT)
        headers = dict(headers or {})
        if self.cookies:
            headers["Cookie"] = self.cookie_header()
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        content = response.read()
        connection.close()
        for value in response.headers.get_all("Set-Cookie") or ():
            for key, morsel in SimpleCookie(value).items():
                self.cookies[key] = morsel.value
        return response, content

    def cookie_header(self) -> str:
        return "; ".join(f"{k}={v}" for k, v in self.cookies.items())


class EndToEndChecks:
    """The sample project with two worker processes (the layer is the subclass's)."""

    worker_processes = 2
    layer_class: type

    def browser(self) -> Browser:
        return Browser(self.live_server_url)

    def test_views(self):
        """The test process's layer is the processes' layer. Plain GET, a multipart POST
        with a 300 KB upload (streamed in body chunks), a redirect, cookies and extra
        headers, a streaming response and a 768 KB file all arrive intact through the
        interface server, the layer and a worker."""
        assert isinstance(get_channel_layer().layer, self.layer_class)
        browser = self.browser()
        response, body = browser.request("GET", "/plain/")
        assert (response.status, body) == (200, b"hello world")

        data = os.urandom(300_000)
        form, content_type = multipart({"name": "report"}, {"attachment": ("a.bin", data)})
        response, body = browser.request("POST", "/upload/", form,
                                         {"Content-Type": content_type})
        result = json.loads(body)
        assert response.status == 200 and result["fields"] == {"name": "report"}
        assert result["files"]["attachment"]["sha256"] == hashlib.sha256(data).hexdigest()

        response, _ = browser.request("GET", "/redirect/")
        assert (response.status, response.headers["Location"]) == (302, "/plain/")

        response, body = browser.request("GET", "/cookies/")
        assert response.headers["X-Custom"] == "yes"
        assert browser.cookies == {"flavour": "oatmeal", "colour": "blue"}
        assert len(response.headers.get_all("Set-Cookie")) == 2

        response, body = browser.request("GET", "/stream/")
        assert body == b"".join(f"line {n}\n".encode() for n in range(5))
        response, body = browser.request("GET", "/file/")
        assert body == BIG_FILE

    def test_admin_login_then_an_authenticated_websocket(self):
        """The Django admin works unchanged: /admin/ redirects to the login page, the login
        form (with its CSRF token) logs a staff user in, and /admin/ then shows the site
        administration. A WebSocket opened with that session cookie knows the user on
        connect and, through its channel session, on later frames."""
        User.objects.create_superuser("root", "root@example.com", "secret-pw")
        browser = self.browser()
        response, _ = browser.request("GET", "/admin/")
        assert response.status == 302
        assert response.headers["Location"].startswith("/admin/login/")
        response, page = browser.request("GET", "/admin/login/")
        token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
        form = urlencode({"username": "root", "password": "secret-pw", "next": "/admin/",
                          "csrfmiddlewaretoken": token.decode()}).encode()
        response, _ = browser.request("POST", "/admin/login/", form,
                                      {"Content-Type": "application/x-www-form-urlencoded"})
        assert (response.status, response.headers["Location"]) == (302, "/admin/")
        response, page = browser.request("GET", "/admin/")
        assert response.status == 200 and b"Site administration" in page

        with connect(self.live_server_ws_url + "/ws/who/", open_timeout=TIMEOUT,
                     additional_headers={"Cookie": browser.cookie_header()}) as websocket:
            assert json.loads(websocket.recv(timeout=TIMEOUT)) == {"user": "root"}
            websocket.send(json.dumps({"n": 1}))
            assert json.loads(websocket.recv(timeout=TIMEOUT)) == {"user": "root",
                                                                  "echo": {"n": 1}}
        with connect(self.live_server_ws_url + "/ws/who/", open_timeout=TIMEOUT) as anonymous:
            assert json.loads(anonymous.recv(timeout=TIMEOUT)) == {"user": None}

    def test_group_chat_across_two_workers(self):
        """Two sockets in one chat room each send messages; both receive every message of
        both, signed with the sender's user, relayed by both worker processes (so a socket
        that joined the group in one process is sent to from the other). Frames of one
        socket may be consumed out of order by two workers, so only the sets are compared."""
        User.objects.create_user("ann", password="pw")
        client = DjangoClient()
        client.force_login(User.objects.get(username="ann"))
        cookie = f"sessionid={client.cookies['sessionid'].value}"
        url = self.live_server_ws_url + "/ws/chat/lobby/"
        count = 20
        with connect(url, open_timeout=TIMEOUT, additional_headers={"Cookie": cookie}) as one, \
                connect(url, open_timeout=TIMEOUT) as two:
            for n in range(count):
                one.send(json.dumps({"text": f"one {n}"}))
                two.send(json.dumps({"text": f"two {n}"}))
            seen = {"one": [], "two": []}
            for name, websocket in (("one", one), ("two", two)):
                for _ in range(2 * count):
                    seen[name].append(json.loads(websocket.recv(timeout=TIMEOUT)))
        sent = {f"{name} {n}" for name in ("one", "two") for n in range(count)}
        for frames in seen.values():
            assert {f["text"] for f in frames} == sent
            assert {f["user"] for f in frames if f["text"].startswith("one")} == {"ann"}
            assert {f["user"] for f in frames if f["text"].startswith("two")} == {None}
        pids = {f["pid"] for f in seen["one"] + seen["two"]}
        assert pids == set(self.live_worker_pids), self.live_server_output()

    def test_ordered_frames_across_two_workers(self):
        """enforce_ordering through the real server: 30 frames sent back to back on one
        socket, consumed by two worker processes, are answered in order, each after the
        ones before it ran (the channel-session count equals the frame's order)."""
        count = 30
        with connect(self.live_server_ws_url + "/ws/ordered/",
                     open_timeout=TIMEOUT) as websocket:
            for n in range(1, count + 1):
                websocket.send(str(n))
            answers = [websocket.recv(timeout=TIMEOUT) for _ in range(count)]
        assert answers == [f"{n}:{n}" for n in range(1, count + 1)], self.live_server_output()


class RedisEndToEndTests(EndToEndChecks, ChannelLiveServerTestCase):
    """Over the session's redis-server."""

    layer_class = RedisChannelLayer


class SQLiteEndToEndTests(EndToEndChecks, ChannelLiveServerTestCase):
    """Over a temporary SQLite layer file."""

    layer_class = SQLiteChannelLayer
