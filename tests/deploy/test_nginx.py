"""The nginx recipe: ``nginx -t`` accepts it, and a real nginx proxies through it.

The recipe is a file for ``/etc/nginx/conf.d`` (inside ``http {}``); the tests
wrap it in a minimal main configuration with a private prefix, so nothing of
the machine's nginx is touched. The proxy test points the upstream at an
interface server with the end-to-end test app's workers and checks what
users got wrong with 1.x: the WebSocket upgrade, streamed responses, and the
forwarded client address.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import websockets

from tests.deploy.helpers import (
    DEPLOY,
    ROOT,
    clean_env,
    free_port,
    stop,
    tool_or_install,
    wait_for_http,
)

SITE = DEPLOY / "nginx" / "switchboard.conf"
MAIN = """
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
daemon off;
events {{ worker_connections 256; }}
http {{
    access_log {prefix}/access.log;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    include {site};
}}
"""


def _configure(tmp_path: Path, listen: int | None = None, upstream: int | None = None) -> Path:
    site = SITE.read_text(encoding="utf-8")
    if listen is not None:
        site = site.replace("listen 80;", f"listen 127.0.0.1:{listen};")
        site = site.replace("listen [::]:80;", "")
        site = site.replace("server_name chat.example.com;", "server_name _;")
    if upstream is not None:
        site = site.replace("server 127.0.0.1:8000;", f"server 127.0.0.1:{upstream};")
    (tmp_path / "site.conf").write_text(site, encoding="utf-8")
    main = tmp_path / "nginx.conf"
    main.write_text(MAIN.format(prefix=tmp_path, site=tmp_path / "site.conf"), encoding="utf-8")
    return main


def _nginx() -> str:
    return tool_or_install("nginx", "nginx")


def test_nginx_t_accepts_the_site(tmp_path):
    """``nginx -t`` parses the site as shipped (inside an ``http {}`` block)."""
    main = _configure(tmp_path)
    done = subprocess.run([_nginx(), "-t", "-p", str(tmp_path), "-c", str(main),
                           "-e", str(tmp_path / "error.log")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "syntax is ok" in done.stderr and "test is successful" in done.stderr


def test_site_passes_the_websocket_upgrade_and_timeouts():
    """The proxied location sends HTTP/1.1 with ``Upgrade`` and a ``Connection`` mapped
    from it, the forwarded headers, long read timeouts and no response buffering."""
    text = SITE.read_text(encoding="utf-8")
    for line in ("proxy_http_version 1.1;", "proxy_set_header Upgrade $http_upgrade;",
                 "proxy_set_header Connection $switchboard_connection;",
                 "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
                 "proxy_set_header X-Forwarded-Proto $scheme;", "proxy_buffering off;",
                 "proxy_read_timeout 1h;"):
        assert line in text, line
    assert "map $http_upgrade $switchboard_connection" in text


@pytest.mark.slow
def test_nginx_proxies_http_websockets_and_streams(tmp_path):
    """Through a running nginx with this site: plain requests reach the app with the
    forwarded headers, a WebSocket upgrade goes through and echoes, and a server-sent
    event arrives while its response is still open (no buffering)."""
    server_port, nginx_port = free_port(), free_port()
    env = clean_env(CHANNEL_LAYER_URL=f"sqlite:///{tmp_path}/layer.db")
    log = tmp_path / "processes.log"
    with open(log, "ab") as out:
        worker = subprocess.Popen([sys.executable, "-m", "worker", "tests.e2e.app:channel_routing",
                                   "--threads", "4"], cwd=ROOT, env=env, stdout=out,
                                  stderr=subprocess.STDOUT)
        server = subprocess.Popen([sys.executable, "-m", "interface_server", "--bind",
                                   "127.0.0.1", "--port", str(server_port), "--proxy-headers"],
                                  cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        main = _configure(tmp_path, listen=nginx_port, upstream=server_port)
        nginx = subprocess.Popen([_nginx(), "-p", str(tmp_path), "-c", str(main),
                                  "-e", str(tmp_path / "error.log")],
                                 stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{nginx_port}"
    try:
        deadline = time.monotonic() + 30
        while wait_for_http(f"{base}/echo", nginx, log) != 200:
            assert time.monotonic() < deadline, log.read_text(errors="replace")
            time.sleep(0.2)  # nginx answers 502/503 until the server and worker are up
        request = urllib.request.Request(f"{base}/echo", headers={"X-Forwarded-For": "203.0.113.9"})
        with urllib.request.urlopen(request, timeout=5) as response:
            echoed = json.loads(response.read())
        headers = echoed["headers"]
        # nginx appends the peer it saw, says the scheme, and sends no "Connection:
        # upgrade" on plain requests (its upstream connections stay alive).
        assert headers["x-forwarded-for"] == ["203.0.113.9, 127.0.0.1"]
        assert headers["x-forwarded-proto"] == ["http"]
        assert "connection" not in headers and "upgrade" not in headers

        async def websocket() -> str:
            async with websockets.connect(f"ws://127.0.0.1:{nginx_port}/ws/echo/") as ws:
                await ws.send("through nginx")
                return await asyncio.wait_for(ws.recv(), 10)

        assert asyncio.run(websocket()) == "through nginx"

        stream = urllib.request.urlopen(f"{base}/events/nginx", timeout=10)
        try:
            deadline = time.monotonic() + 10
            while True:  # publish until the stream has joined its group
                with urllib.request.urlopen(f"{base}/events/nginx/publish?data=hello",
                                            timeout=5) as published:
                    if json.loads(published.read())["listeners"] >= 1:
                        break
                assert time.monotonic() < deadline, "the event stream never joined"
                time.sleep(0.1)
            line = b""
            while b"data: hello" not in line:
                line = stream.readline()
                assert line, "the event stream ended"
        finally:
            stream.close()
    finally:
        for process in (nginx, server, worker):
            stop(process)
