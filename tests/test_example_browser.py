"""The example chat project and the JavaScript client in a real browser (Debian's Chromium).

One set of real processes serves every test of this module, as the Procfile
runs them: an interface server, two workers (``manage.py runworker``) and
the delay server, on a temporary SQLite layer and database. The long-poll
timeout is 2 s instead of 25 so waiting for it stays cheap. Pages are driven
through their own JavaScript; screenshots are checked for size and kept in
the test's temporary directory.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from tests.deploy.helpers import stop

ROOT = Path(__file__).resolve().parents[1]
MANAGE = ROOT / "deploy" / "example" / "manage.py"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
LONGPOLL_TIMEOUT = 2.0
NO_WEBSOCKET = "delete window.WebSocket;"
# Counts long-poll answers with no frames: the server's timeouts.
COUNT_POLL_TIMEOUTS = """
window.pollTimeouts = 0;
const originalFetch = window.fetch;
window.fetch = async (...args) => {
    const response = await originalFetch(...args);
    if (String(args[0]).includes("/poll/")) {
        response.clone().json().then((body) => {
            if (body.frames.length === 0) window.pollTimeouts += 1;
        }).catch(() => {});
    }
    return response;
};
"""

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Example:
    """The example's processes; ``restart_server`` replaces the interface server."""

    def __init__(self, tmp: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp / "processes.log"
        self.env = {**os.environ,
                    "CHANNEL_LAYER_URL": f"sqlite:///{tmp}/layer.db",
                    "DATABASE_URL": f"sqlite:///{tmp}/chat.db",
                    "LONGPOLL_TIMEOUT": str(LONGPOLL_TIMEOUT)}
        # DJANGO_SETTINGS_MODULE too: the Django tests of this run set their own.
        for name in ("REDIS_URL", "PORT", "WEB_CONCURRENCY", "DJANGO_SETTINGS_MODULE"):
            self.env.pop(name, None)
        subprocess.run([sys.executable, str(MANAGE), "migrate", "--noinput", "-v0"],
                       cwd=ROOT, env=self.env, check=True, timeout=60)
        self.others = [self._start([str(MANAGE), "runworker", "--threads", "2"])
                       for _ in range(2)]
        self.others.append(self._start(["-m", "worker.delay"]))
        self.server = self._start_server()

    def _start(self, args: list[str]) -> subprocess.Popen[bytes]:
        with open(self.log, "ab") as out:
            return subprocess.Popen([sys.executable, *args], cwd=ROOT, env=self.env,
                                    stdout=out, stderr=subprocess.STDOUT)

    def _start_server(self) -> subprocess.Popen[bytes]:
        server = self._start(["-m", "interface_server", "--bind", "127.0.0.1",
                              "--port", str(self.port)])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=2) as response:
                    if response.status == 200:
                        return server
            except OSError:
                pass
            if server.poll() is not None:
                break
            time.sleep(0.1)
        pytest.fail(f"the example did not serve {self.url}/healthz:\n"
                    + self.log.read_text(errors="replace"))

    def stop_server(self) -> None:
        stop(self.server)

    def start_server(self) -> None:
        self.server = self._start_server()

    def close(self) -> None:
        for process in [self.server, *self.others]:
            stop(process)


@pytest.fixture(scope="module")
def example(tmp_path_factory) -> Iterator[Example]:
    running = Example(tmp_path_factory.mktemp("example"))
    try:
        yield running
    finally:
        running.close()


@pytest.fixture(scope="module")
def browser():
    assert os.path.exists(CHROMIUM), (
        "Debian's chromium is required for the browser tests: apt-get install chromium")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def _page(browser, url: str, *, websocket: bool = True, script: str = "") -> Page:
    context = browser.new_context(viewport={"width": 1000, "height": 700})
    if not websocket:
        context.add_init_script(NO_WEBSOCKET)
    if script:
        context.add_init_script(script)
    page = context.new_page()
    page.goto(url)
    return page


def _say(page: Page, text: str) -> None:
    page.fill("#text", text)
    page.press("#text", "Enter")


def _shot(page: Page, path: Path, min_bytes: int = 15_000) -> None:
    page.screenshot(path=str(path))
    assert path.stat().st_size > min_bytes, f"{path.name} looks empty"


def test_two_tabs_chat_with_presence_and_history(example, browser, tmp_path):
    """Two tabs see each other in the member list and each other's messages; a third
    tab joining later gets those messages as history; a tab that leaves disappears
    from the others' member lists."""
    room = f"{example.url}/rooms/browser/?name="
    alice, bob = _page(browser, room + "alice"), _page(browser, room + "bob")
    for page in (alice, bob):
        expect(page.locator("#status")).to_have_text("connected (WebSocket)")
        expect(page.locator("#members li")).to_have_text(["alice", "bob"])
    _say(alice, "hello from alice")
    expect(bob.locator("#log .text")).to_have_text(["hello from alice"])
    _say(bob, "hi alice")
    for page in (alice, bob):
        expect(page.locator("#log .text")).to_have_text(["hello from alice", "hi alice"])
    _shot(alice, tmp_path / "two-tabs.png")

    carol = _page(browser, room + "carol")
    expect(carol.locator("#log .text")).to_have_text(["hello from alice", "hi alice"])
    expect(carol.locator("#log .who")).to_have_text(["alice", "bob"])
    expect(alice.locator("#members li")).to_have_text(["alice", "bob", "carol"])
    bob.context.close()
    for page in (alice, carol):
        expect(page.locator("#members li")).to_have_text(["alice", "carol"])
    alice.context.close()
    carol.context.close()


def test_pages_reconnect_after_the_interface_server_restarts(example, browser, tmp_path):
    """When the interface server stops, the pages say so; when it is back they
    reconnect by themselves (with backoff), presence is rebuilt, and messages flow."""
    room = f"{example.url}/rooms/restart/?name="
    alice, bob = _page(browser, room + "alice"), _page(browser, room + "bob")
    for page in (alice, bob):
        expect(page.locator("#members li")).to_have_text(["alice", "bob"])
    example.stop_server()
    for page in (alice, bob):
        expect(page.locator("#status")).to_contain_text("disconnected; retrying in")
    example.start_server()
    for page in (alice, bob):
        expect(page.locator("#status")).to_have_text("connected (WebSocket)", timeout=20_000)
        expect(page.locator("#members li")).to_have_text(["alice", "bob"])
    _say(bob, "bob is back")
    expect(alice.locator("#log .text").last).to_have_text("bob is back")
    _shot(alice, tmp_path / "after-restart.png")
    for page in (alice, bob):
        page.context.close()


def test_long_poll_page_works_without_websocket(example, browser, tmp_path):
    """With ``window.WebSocket`` removed, the long-poll page gets the history, sends
    through POST, receives a WebSocket user's message, and keeps receiving after an
    idle long-poll request timed out on the server; the WebSocket page, also without
    WebSocket, falls back to long-polling by itself."""
    socket_page = _page(browser, f"{example.url}/rooms/fallback/?name=ws-user")
    expect(socket_page.locator("#status")).to_have_text("connected (WebSocket)")
    _say(socket_page, "before the poller came")

    poller = _page(browser, f"{example.url}/rooms/fallback/longpoll/?name=poller",
                   websocket=False, script=COUNT_POLL_TIMEOUTS)
    assert poller.evaluate("typeof window.WebSocket") == "undefined"
    expect(poller.locator("#status")).to_have_text("connected (long-poll)")
    expect(poller.locator("#log .text")).to_have_text(["before the poller came"])
    expect(poller.locator("#members li")).to_have_text(["ws-user"])

    _say(poller, "sent by POST")
    expect(socket_page.locator("#log .text").last).to_have_text("sent by POST")
    expect(poller.locator("#log .text").last).to_have_text("sent by POST")

    # An idle request is answered empty after LONGPOLL_TIMEOUT, and polling goes on.
    started = time.monotonic()
    poller.wait_for_function("window.pollTimeouts >= 1", timeout=LONGPOLL_TIMEOUT * 5_000)
    assert time.monotonic() - started >= LONGPOLL_TIMEOUT * 0.5
    _say(socket_page, "after a poll timeout")
    expect(poller.locator("#log .text").last).to_have_text("after a poll timeout")
    _shot(poller, tmp_path / "long-poll.png")

    auto = _page(browser, f"{example.url}/rooms/fallback/?name=auto", websocket=False)
    expect(auto.locator("#status")).to_have_text("connected (long-poll)")
    expect(auto.locator("#log .text")).to_have_count(3)
    for page in (socket_page, poller, auto):
        page.context.close()


def test_streaming_page_shows_server_sent_events(example, browser, tmp_path):
    """The event-stream page shows the history, then each new message and presence
    change as it is published, over one kept-open HTTP response."""
    alice = _page(browser, f"{example.url}/rooms/sse/?name=alice")
    _say(alice, "first")
    expect(alice.locator("#log .text")).to_have_text(["first"])

    stream = _page(browser, f"{example.url}/rooms/sse/stream/")
    expect(stream.locator("#status")).to_have_text("streaming")
    expect(stream.locator("#log .text")).to_have_text(["first"])
    expect(stream.locator("#members li")).to_have_text(["alice"])
    _say(alice, "second, live")
    expect(stream.locator("#log .text")).to_have_text(["first", "second, live"])
    bob = _page(browser, f"{example.url}/rooms/sse/?name=bob")
    expect(stream.locator("#members li")).to_have_text(["alice", "bob"])
    _shot(stream, tmp_path / "stream.png")
    for page in (alice, stream, bob):
        page.context.close()


# -- the JavaScript client (worker/django/static/switchboard/switchboard.js) ----------

def test_js_backoff_grows_exponentially_with_bounded_jitter(example, browser):
    """``backoffDelay`` doubles from ``minDelay`` up to ``maxDelay``; jitter takes off
    at most ``jitter`` of each wait, and a random of 0 takes off nothing."""
    page = _page(browser, f"{example.url}/rooms/js/?name=js")
    delays = page.evaluate("""() => {
        const o = {minDelay: 100, maxDelay: 1000, factor: 2, jitter: 0.5};
        const at = (r) => [0, 1, 2, 3, 4, 5].map(
            (n) => Switchboard.backoffDelay(n, {...o, random: () => r}));
        return {none: at(0), most: at(0.999999)};
    }""")
    assert delays["none"] == [100, 200, 400, 800, 1000, 1000]
    assert delays["most"] == [50, 100, 200, 400, 500, 500]
    page.context.close()


def test_js_client_sends_json_and_demultiplexes_streams(example, browser):
    """A bare ``Switchboard.Client`` gets the ``chat`` and ``presence`` streams apart,
    and a payload it sends on ``chat`` comes back as a stored message."""
    page = _page(browser, f"{example.url}/rooms/js/?name=js")
    result = page.evaluate("""() => new Promise((resolve, reject) => {
        const seen = {chat: [], presence: [], all: 0};
        const client = new Switchboard.Client("/ws/rooms/js-demux/?name=demux");
        client.on("message", () => { seen.all += 1; });
        client.demultiplex("presence", (p) => seen.presence.push(p.type));
        client.demultiplex("chat", (p) => {
            seen.chat.push(p.type);
            if (p.type === "message") { client.close(); resolve({seen, text: p.message.text}); }
        });
        client.on("open", () => client.stream("chat").send({text: "über JSON ✓"}));
        setTimeout(() => reject(new Error("no echo in 10 s")), 10000);
    })""")
    assert result["text"] == "über JSON ✓"
    assert result["seen"]["chat"] == ["history", "message"]
    assert result["seen"]["presence"] == ["presence"]
    assert result["seen"]["all"] == 3
    page.context.close()


def test_js_client_queues_and_reconnects_after_a_server_restart(example, browser):
    """While the interface server is down the client retries with growing waits and
    queues what it is asked to send; when the server is back it reconnects and the
    queued payload arrives."""
    page = _page(browser, f"{example.url}/rooms/js/?name=js")
    page.evaluate("""() => {
        window.log = {opens: 0, delays: [], texts: []};
        window.client = new Switchboard.Client("/ws/rooms/js-restart/?name=r",
            {minDelay: 200, maxDelay: 1600, jitter: 0.25});
        client.on("open", () => { log.opens += 1; });
        client.on("close", (info) => log.delays.push(info.delay));
        client.demultiplex("chat", (p) => {
            if (p.type === "message") log.texts.push(p.message.text);
        });
    }""")
    page.wait_for_function("log.opens === 1")
    example.stop_server()
    page.wait_for_function("log.delays.length >= 4", timeout=20_000)
    assert page.evaluate("client.send({stream: 'chat', payload: {text: 'queued'}})") is False
    example.start_server()
    page.wait_for_function("log.opens === 2", timeout=20_000)
    page.wait_for_function("log.texts.includes('queued')")
    delays = page.evaluate("log.delays")
    for attempt, delay in enumerate(delays[:4]):
        ceiling = min(1600, 200 * 2 ** attempt)
        assert ceiling * 0.75 <= delay <= ceiling, delays
    page.evaluate("client.close()")
    page.context.close()


def test_js_client_falls_back_to_long_poll_after_failed_websockets(example, browser):
    """A client whose WebSocket is refused ``fallbackAfter`` times in a row, never
    having opened, switches to long-polling and still gets its streams."""
    page = _page(browser, f"{example.url}/rooms/js/?name=js")
    transport = page.evaluate("""() => new Promise((resolve, reject) => {
        const client = new Switchboard.Client("/ws/refused/", {
            minDelay: 50, fallbackAfter: 2,
            longPoll: {url: "/rooms/js-fallback/poll/", sendUrl: "/rooms/js-fallback/messages/"},
        });
        client.demultiplex("chat", (p) => {
            if (p.type === "history") { client.close(); resolve(client.transport); }
        });
        setTimeout(() => reject(new Error("no long-poll history in 10 s")), 10000);
    })""")
    assert transport == "longpoll"
    page.context.close()
