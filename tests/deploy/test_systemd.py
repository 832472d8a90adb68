"""The systemd units: ``systemd-analyze verify`` accepts them, and socket activation works.

The units name ``/srv/switchboard`` (the checkout) and ``/etc/switchboard/env``;
the tests verify copies pointing at this checkout, its virtualenv and the
example environment file, because ``verify`` checks that every ``ExecStart``
program exists.
"""

from __future__ import annotations

import configparser
import shlex
import subprocess
from pathlib import Path

import pytest

from tests.deploy.helpers import (
    BIN,
    DEPLOY,
    ROOT,
    clean_env,
    free_port,
    stop,
    wait_for_http,
    which,
)

SYSTEMD = DEPLOY / "systemd"
UNITS = ["switchboard.socket", "switchboard-web.service", "switchboard-worker@.service",
         "switchboard-delay.service", "switchboard.target"]


def _localised(tmp_path: Path) -> Path:
    for name in [*UNITS, "env.example"]:
        text = (SYSTEMD / name).read_text(encoding="utf-8")
        text = (text.replace("/srv/switchboard/.venv/bin", str(BIN))
                    .replace("/srv/switchboard", str(ROOT))
                    .replace("/etc/switchboard/env", str(tmp_path / "env.example")))
        (tmp_path / name).write_text(text, encoding="utf-8")
    return tmp_path


def _unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # keys are case-sensitive
    parser.read_string((SYSTEMD / name).read_text(encoding="utf-8"))
    return parser


def test_systemd_analyze_verify_accepts_the_units(tmp_path):
    """``systemd-analyze verify`` exits 0 and prints nothing (it only warns, exit 0,
    about unknown keys or bad values) for the socket, services, template and target."""
    tool = which("systemd-analyze")
    if tool is None:
        pytest.fail("systemd-analyze is missing: apt-get install systemd (.ci/run does)")
    units = _localised(tmp_path)
    names = [n.replace("@.service", "@1.service") for n in UNITS]
    done = subprocess.run([tool, "verify", "--man=no", *names], cwd=units,
                          capture_output=True, text=True, timeout=120)
    if "System has not been booted with systemd" in done.stderr:  # pragma: no cover
        pytest.skip(f"systemd-analyze cannot run in this sandbox: {done.stderr.strip()}")
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


def test_units_wire_the_socket_to_the_server_and_stop_gracefully():
    """The socket unit feeds the web service, which listens on the passed fd 3; every
    service stops with SIGTERM and waits longer than the server's 30 s drain."""
    socket_unit = _unit("switchboard.socket")
    assert socket_unit["Socket"]["Service"] == "switchboard-web.service"
    assert socket_unit["Socket"]["ListenStream"].startswith("127.0.0.1:")
    web = _unit("switchboard-web.service")
    assert "switchboard.socket" in web["Unit"]["Requires"]
    assert shlex.split(web["Service"]["ExecStart"])[1:3] == ["--fd", "3"]
    assert int(web["Service"]["TimeoutStopSec"]) > 30
    for name in UNITS[1:4]:
        service = _unit(name)["Service"]
        assert service["KillSignal"] == "SIGTERM", name
        assert service["EnvironmentFile"] == "/etc/switchboard/env", name
    worker = shlex.split(_unit("switchboard-worker@.service")["Service"]["ExecStart"])
    assert worker[1:4] == ["deploy/example/manage.py", "runworker", "--threads"]


def test_socket_activation_serves_on_the_passed_socket(tmp_path):
    """The web unit's own ExecStart, started by ``systemd-socket-activate`` (which
    passes a listening socket as fd 3 with LISTEN_FDS/LISTEN_PID, as systemd does),
    answers HTTP on that socket."""
    activate = which("systemd-socket-activate")
    if activate is None:
        pytest.fail("systemd-socket-activate is missing: apt-get install systemd")
    units = _localised(tmp_path)
    exec_start = configparser.ConfigParser(interpolation=None)
    exec_start.read(units / "switchboard-web.service")
    command = shlex.split(exec_start["Service"]["ExecStart"])
    port = free_port()
    env = {k: v for k, v in clean_env().items() if not k.startswith("LISTEN_")}
    env["CHANNEL_LAYER_URL"] = f"sqlite:///{tmp_path}/layer.db"
    log = tmp_path / "web.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([activate, "--listen", f"127.0.0.1:{port}", *command],
                                   env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        # No worker runs, so the server answers 503 at once: any answer proves the
        # socket was adopted.
        status = wait_for_http(f"http://127.0.0.1:{port}/", process, log)
        assert status == 503
        assert process.poll() is None
    finally:
        stop(process)
