"""The example chat page in a real browser (Debian's headless Chromium).

Two tabs join the room through the page's own JavaScript; a message typed in
one appears in both; when the interface server restarts, the page reconnects by
itself and the room works again.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", *args], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def _wait_for_page(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if process.poll() is not None:
            break
        time.sleep(0.1)
    pytest.fail(f"the interface server did not serve {url}:\n{log.read_text(errors='replace')}")


@pytest.mark.slow
def test_chat_page_in_chromium(tmp_path):
    """Messages typed in one tab reach both tabs; after a server restart the page
    reconnects by itself and messages flow again."""
    assert os.path.exists(CHROMIUM), (
        "Debian's chromium is required for the browser tests: apt-get install chromium"
    )
    port = _free_port()
    env = {**os.environ, "CHANNEL_LAYER_URL": f"sqlite:///{tmp_path}/layer.db"}
    env.pop("REDIS_URL", None)
    log = tmp_path / "processes.log"
    server_args = ["interface_server", "--bind", "127.0.0.1", "--port", str(port)]
    worker = _start(["worker", "deploy.example.app:channel_routing"], env, log)
    server = _start(server_args, env, log)
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_for_page(url, server, log)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            alice, bob = browser.new_page(), browser.new_page()
            for page in (alice, bob):
                page.goto(url)
                expect(page.locator("#status")).to_have_text("connected", timeout=10_000)
            alice.fill("#text", "hello from alice")
            alice.press("#text", "Enter")
            for page in (alice, bob):
                expect(page.locator("#log p").last).to_have_text("hello from alice",
                                                                 timeout=10_000)
            alice.screenshot(path=str(tmp_path / "chat.png"))
            assert (tmp_path / "chat.png").stat().st_size > 5_000

            _stop(server)
            expect(bob.locator("#status")).to_contain_text("disconnected", timeout=10_000)
            server = _start(server_args, env, log)
            _wait_for_page(url, server, log)
            for page in (alice, bob):
                expect(page.locator("#status")).to_have_text("connected", timeout=20_000)
            bob.fill("#text", "bob is back")
            bob.press("#text", "Enter")
            expect(alice.locator("#log p").last).to_have_text("bob is back", timeout=10_000)
            browser.close()
    finally:
        _stop(server)
        _stop(worker)
