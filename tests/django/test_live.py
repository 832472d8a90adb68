"""``ChannelLiveServerTestCase`` and the model binding with real processes over SQLite.

``interfaceserver`` and ``manage.py runworker`` run as subprocesses on a temporary SQLite
layer and the session's (file) test database; this test process changes models through
the ORM and talks to the processes over real HTTP and WebSockets.
"""

from __future__ import annotations

import json
import urllib.request

import pytest
from django.contrib.auth.models import Permission, User
from django.contrib.sessions.models import Session
from django.test import Client as DjangoClient
from websockets.sync.client import connect

from asgi_spec.layers.sqlite import SQLiteChannelLayer
from tests.django.project.notes.models import Note
from worker.django import get_channel_layer
from worker.django.testing import ChannelLiveServerTestCase

pytestmark = pytest.mark.slow  # real processes
TIMEOUT = 10


def session_cookie(user: User) -> str:
    """A logged-in session for ``user`` in the test database, as a Cookie header."""
    client = DjangoClient()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}"


class LiveServerTests(ChannelLiveServerTestCase):
    """One interface server and one worker process for the class."""

    def recv_json(self, websocket):
        return json.loads(websocket.recv(timeout=TIMEOUT))

    def test_views_are_served_by_a_worker_process_on_the_test_database(self):
        """live_server_url serves the project's views from the runworker process, which
        writes to the test database this process reads (a session row appears here), and
        the test process's layer is the processes' (SQLite) layer."""
        with urllib.request.urlopen(self.live_server_url + "/plain/", timeout=TIMEOUT) as r:
            assert r.read() == b"hello world"
        with urllib.request.urlopen(self.live_server_url + "/session/", timeout=TIMEOUT) as r:
            assert json.loads(r.read()) == {"count": 1}
            assert "sessionid=" in r.headers["Set-Cookie"]
        assert Session.objects.count() == 1
        assert isinstance(get_channel_layer().layer, SQLiteChannelLayer)
        assert self.live_server_ws_url.startswith("ws://127.0.0.1:")

    def test_binding_between_the_orm_and_a_websocket(self):
        """A WebSocket on the notes demultiplexer (in group "notes") sees a note created
        through the ORM in this process; its inbound create is refused (answered on the
        stream, nothing saved) while its user lacks notes.add_note, and applied by the
        worker process -- and announced to the socket -- once the user has it."""
        alice = User.objects.create_user("alice", password="pw")
        with connect(self.live_server_ws_url + "/ws/notes/", open_timeout=TIMEOUT,
                     additional_headers={"Cookie": session_cookie(alice)}) as websocket:
            Note.objects.create(title="from the orm")
            frame = self.recv_json(websocket)
            assert frame["stream"] == "notes"
            assert frame["payload"]["action"] == "create"
            assert frame["payload"]["data"]["title"] == "from the orm"

            create = json.dumps({"stream": "notes", "payload": {
                "action": "create", "data": {"title": "from the socket"}}})
            websocket.send(create)
            refusal = self.recv_json(websocket)["payload"]
            assert refusal["error"] == "permission denied", self.live_server_output()
            assert list(Note.objects.values_list("title", flat=True)) == ["from the orm"]

            alice.user_permissions.add(Permission.objects.get(codename="add_note"))
            websocket.send(create)
            frame = self.recv_json(websocket)
            assert (frame["payload"]["action"], frame["payload"]["data"]["title"]) == (
                "create", "from the socket")
            assert Note.objects.filter(title="from the socket").exists()
