"""The benchmark's Django project (``tests/bench/djangoproject``) serves its endpoints.

Each check runs in a subprocess (the project has its own settings module, with the
project folder on ``sys.path``): as Switchboard serves it, through the test tools on
the in-memory layer; as uvicorn serves it, through Django's own ASGI handler.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # real processes
PROJECT = Path(__file__).resolve().parents[1] / "bench" / "djangoproject"

SWITCHBOARD = '''
import django, json
django.setup()
from django.core.management import call_command
call_command("check", fail_level="WARNING")
from worker.django.testing import Client, WSClient, memory_layers
with memory_layers():
    response = Client().get("/")
    assert (response.status_code, response.content) == (200, b"hello"), response
    assert Client().get("/admin/login/").status_code == 200
    echo = WSClient()
    echo.connect("/ws/echo/")
    echo.send(text="ping")
    assert echo.receive() == {"text": "ping"}
    one, two = WSClient(), WSClient()
    one.connect("/ws/group/")
    two.connect("/ws/group/")
    one.send(text="all")
    assert one.receive() == two.receive() == {"text": "all"}
print("ok")
'''

DJANGO_ASGI = '''
import asyncio
from asgiref.testing import ApplicationCommunicator
from benchsite.django_asgi import application

async def get(path):
    scope = {"type": "http", "method": "GET", "path": path, "query_string": b"",
             "headers": [(b"host", b"localhost")], "server": ("localhost", 80)}
    app = ApplicationCommunicator(application, scope)
    await app.send_input({"type": "http.request", "body": b""})
    start = await app.receive_output(5)
    body = await app.receive_output(5)
    return start["status"], body["body"]

assert asyncio.run(get("/")) == (200, b"hello")
assert asyncio.run(get("/admin/login/"))[0] == 200
print("ok")
'''


def run(code: str, server: str) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("CHANNEL_LAYER_URL",)}
    env.update(DJANGO_SETTINGS_MODULE="benchsite.settings", BENCH_SERVER=server,
               PYTHONPATH=os.pathsep.join([str(PROJECT), *sys.path]))
    done = subprocess.run([sys.executable, "-c", code], cwd=PROJECT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr


def test_switchboard_serves_the_hello_view_admin_and_websockets():
    """With BENCH_SERVER=switchboard the project passes its system checks and, routed by
    its own routing, answers GET / with hello, renders the admin login page, echoes on
    /ws/echo/ and broadcasts to every socket on /ws/group/."""
    run(SWITCHBOARD, "switchboard")


def test_djangos_own_asgi_handler_serves_the_same_views():
    """With BENCH_SERVER=django (what the uvicorn contender runs) Django's ASGI handler
    answers GET / with hello and renders the admin login page."""
    run(DJANGO_ASGI, "django")
