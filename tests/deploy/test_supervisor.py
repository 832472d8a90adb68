"""The supervisor recipe: supervisor's own parser accepts it, and supervisord runs it.

The recipe is a file for ``/etc/supervisor/conf.d``; the tests include it
from a minimal ``supervisord.conf``. For the run, paths point at this
checkout, ``user=`` lines go (the account does not exist here), the socket
moves to a free port and the logs to a temporary directory.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from supervisor.options import FastCGIGroupConfig, ServerOptions

from tests.deploy.helpers import BIN, DEPLOY, ROOT, clean_env, free_port

RECIPE = DEPLOY / "supervisor" / "switchboard.conf"
MAIN = """
[supervisord]
logfile={tmp}/supervisord.log
pidfile={tmp}/supervisord.pid
childlogdir={tmp}
nodaemon=true
{environment}

[unix_http_server]
file={tmp}/supervisor.sock

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{tmp}/supervisor.sock

[include]
files={recipe}
"""


def _write(tmp_path: Path, recipe: str, environment: str = "") -> Path:
    (tmp_path / "switchboard.conf").write_text(recipe, encoding="utf-8")
    main = tmp_path / "supervisord.conf"
    main.write_text(MAIN.format(tmp=tmp_path, recipe=tmp_path / "switchboard.conf",
                                environment=environment), encoding="utf-8")
    return main


def _parsed(main: Path) -> dict:
    options = ServerOptions()
    options.realize(args=["-c", str(main)], doc="")
    return {group.name: group for group in options.process_group_configs}


def test_supervisor_parses_the_recipe(tmp_path):
    """supervisor's parser reads web as an fcgi-program group of two interface servers
    on one TCP socket (passed as fd 0, so ``--fd 0``), and a group ``switchboard`` of
    four named workers and the delay server; every program stops with SIGTERM."""
    text = RECIPE.read_text(encoding="utf-8")
    assert text.count("user=switchboard") == 3
    # supervisor checks users and log directories while parsing: neither exists here.
    local = _without_users(text).replace("/var/log/switchboard", str(tmp_path))
    groups = _parsed(_write(tmp_path, local))
    assert set(groups) == {"web", "switchboard"}
    assert isinstance(groups["web"], FastCGIGroupConfig)
    assert str(groups["web"].socket_config) == "tcp://127.0.0.1:8000"
    processes = {p.name: p for group in groups.values() for p in group.process_configs}
    assert set(processes) == {"web_0", "web_1", "worker_0", "worker_1", "worker_2",
                              "worker_3", "delay"}
    web = shlex.split(processes["web_0"].command)
    assert web[0].endswith("/interfaceserver") and web[1:3] == ["--fd", "0"]
    assert "runworker" in processes["worker_3"].command
    assert "worker-3" in processes["worker_3"].command  # each worker named apart
    for process in processes.values():
        assert process.stopsignal == 15, process.name  # SIGTERM
        assert process.stopwaitsecs >= 15, process.name


def _without_users(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.startswith("user="))


@pytest.mark.slow
def test_supervisord_runs_the_recipe(tmp_path):
    """supervisord started with the recipe serves the example chat: an HTTP request on
    the socket it holds reaches an interface server, a worker and the database."""
    port = free_port()
    recipe = RECIPE.read_text(encoding="utf-8")
    recipe = (recipe.replace("/srv/switchboard/.venv/bin", str(BIN))
              .replace("/srv/switchboard", str(ROOT))
              .replace("/var/log/switchboard", str(tmp_path))
              .replace("tcp://127.0.0.1:8000", f"tcp://127.0.0.1:{port}"))
    recipe = _without_users(recipe)
    env = {"CHANNEL_LAYER_URL": f"sqlite:///{tmp_path}/layer.db",
           "DATABASE_URL": f"sqlite:///{tmp_path}/chat.db", "PATH": os.environ["PATH"]}
    subprocess.run([sys.executable, str(ROOT / "deploy/example/manage.py"), "migrate",
                    "--noinput", "-v0"], env=clean_env(**env), check=True, timeout=60)
    environment = "environment=" + ",".join(f'{k}="{v}"' for k, v in env.items())
    main = _write(tmp_path, recipe, environment)
    supervisord = subprocess.Popen([str(BIN / "supervisord"), "-c", str(main)],
                                   env=clean_env(), stdout=subprocess.DEVNULL,
                                   stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 40
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz",
                                            timeout=3) as response:
                    assert (response.status, response.read()) == (200, b"ok")
                    break
            except OSError:
                logs = "\n".join(p.read_text(errors="replace")[-2000:]
                                 for p in sorted(tmp_path.glob("*.log")))
                assert supervisord.poll() is None, logs
                assert time.monotonic() < deadline, logs
                time.sleep(0.2)
    finally:
        supervisord.terminate()
        try:
            supervisord.wait(90)
        except subprocess.TimeoutExpired:
            supervisord.kill()
            supervisord.wait(5)
