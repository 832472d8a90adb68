"""``make run`` -- the README's first command -- serves the example chat project.

This runs the real command from the repository root, as a newcomer would,
with ``PORT`` on a free port and the layer and the database in temporary
SQLite files, so two runs of the suite at once do not collide.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import websockets

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, response.read()


async def _frame(socket_, stream: str, kind: str) -> dict:
    """The next payload of ``stream`` with ``type`` ``kind`` (other frames are skipped)."""
    while True:
        data = json.loads(await asyncio.wait_for(socket_.recv(), 10))
        if data["stream"] == stream and data["payload"]["type"] == kind:
            return data["payload"]


@pytest.mark.slow
def test_make_run_serves_the_example(tmp_path):
    """``make run`` migrates, then serves the chat: the page over HTTP, a message
    echoed to every socket in a room, the message in the history a new socket gets
    (so it is in the database), two worker processes; SIGTERM stops everything."""
    port = _free_port()
    env = {**os.environ, "PORT": str(port),
           "CHANNEL_LAYER_URL": f"sqlite:///{tmp_path}/layer.db",
           "DATABASE_URL": f"sqlite:///{tmp_path}/chat.db"}
    # DJANGO_SETTINGS_MODULE too: the Django tests of this run set their own.
    for name in ("REDIS_URL", "WEB_CONCURRENCY", "INTERFACESERVER_BIND",
                 "DJANGO_SETTINGS_MODULE"):
        env.pop(name, None)
    log_path = tmp_path / "make-run.log"
    log = open(log_path, "wb")  # noqa: SIM115 - the child writes it
    process = subprocess.Popen(["make", "run"], cwd=ROOT, env=env, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 150  # includes the first install of the run extra
        while True:
            try:
                status, body = _get(f"http://127.0.0.1:{port}/")
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("make run did not serve the page:\n"
                                + log_path.read_text(errors="replace"))
                time.sleep(0.2)
        assert status == 200 and b"Switchboard chat" in body
        assert (tmp_path / "chat.db").is_file(), "make run did not migrate DATABASE_URL"

        async def chat() -> tuple[dict, dict, dict]:
            url = f"ws://127.0.0.1:{port}/ws/rooms/make-run/?name="
            async with websockets.connect(url + "alice") as alice:
                await _frame(alice, "chat", "history")
                async with websockets.connect(url + "bob") as bob:
                    await _frame(bob, "chat", "history")
                    await alice.send(json.dumps({"stream": "chat",
                                                 "payload": {"text": "hello, room"}}))
                    to_alice = await _frame(alice, "chat", "message")
                    to_bob = await _frame(bob, "chat", "message")
            # A new connection -- a reconnect -- gets the message from the database.
            async with websockets.connect(url + "carol") as carol:
                history = await _frame(carol, "chat", "history")
            return to_alice, to_bob, history

        to_alice, to_bob, history = asyncio.run(chat())
        for payload in (to_alice, to_bob):
            assert payload["message"]["text"] == "hello, room"
            assert payload["message"]["name"] == "alice"
        assert [m["text"] for m in history["messages"]] == ["hello, room"]
        text = log_path.read_text(errors="replace")
        assert "worker.1" in text and "worker.2" in text and "delay.1" in text, text
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
        log.close()
    deadline = time.monotonic() + 20
    while _group(process.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    leftover = _group(process.pid)
    if leftover:
        os.killpg(process.pid, signal.SIGKILL)
    assert leftover == [], "processes of make run outlived SIGTERM by 20 s"


def _group(pgid: int) -> list[str]:
    found = subprocess.run(["pgrep", "-g", str(pgid)], capture_output=True, text=True)
    return found.stdout.split()
