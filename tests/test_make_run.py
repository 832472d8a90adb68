"""``make run`` -- the README's first command -- serves the example app.

This runs the real command from the repository root, as a newcomer would,
with ``PORT`` on a free port and the layer in a temporary SQLite file, so two
runs of the suite at once do not collide.
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


@pytest.mark.slow
def test_make_run_serves_the_example(tmp_path):
    """``make run`` serves the chat page over HTTP and broadcasts a WebSocket message
    to every socket in the room; SIGTERM stops all its processes."""
    port = _free_port()
    env = {**os.environ, "PORT": str(port),
           "CHANNEL_LAYER_URL": f"sqlite:///{tmp_path}/layer.db"}
    env.pop("REDIS_URL", None)
    log = open(tmp_path / "make-run.log", "wb")  # noqa: SIM115 - the child writes it
    process = subprocess.Popen(["make", "run"], cwd=ROOT, env=env, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120  # includes the first install of honcho
        while True:
            try:
                status, body = _get(f"http://127.0.0.1:{port}/")
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("make run did not serve the page:\n"
                                + (tmp_path / "make-run.log").read_text(errors="replace"))
                time.sleep(0.2)
        assert status == 200 and b"Switchboard chat" in body

        async def chat() -> tuple[str, str]:
            url = f"ws://127.0.0.1:{port}/ws/chat/"
            async with websockets.connect(url) as alice, websockets.connect(url) as bob:
                await asyncio.sleep(0.2)  # both have joined the room
                await alice.send("hello, room")
                return (await asyncio.wait_for(alice.recv(), 10),
                        await asyncio.wait_for(bob.recv(), 10))

        for received in asyncio.run(chat()):
            assert json.loads(received) == {"text": "hello, room"}
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
