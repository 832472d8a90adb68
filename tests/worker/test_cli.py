"""Tests for ``worker.cli`` (``runworker``) through click's CliRunner; the loop is stubbed."""

from __future__ import annotations

import sys

import pytest
from click.testing import CliRunner

from asgi_spec import DEFAULT_LAYER_URL
from asgi_spec.layers.memory import MemoryChannelLayer
from asgi_spec.layers.sqlite import SQLiteChannelLayer
from worker import cli
from worker.worker import Worker

ROUTING = "tests.bench.app:channel_routing"

#: Imported by --layer in a test below.
memory_layer_object = MemoryChannelLayer()
#: Set by a test, then built by ``sqlite_layer_factory`` through --layer module:attr.
SQLITE_PATH = ""


def sqlite_layer_factory():
    return SQLiteChannelLayer(SQLITE_PATH)


@pytest.fixture
def started(monkeypatch):
    """Stub Worker.run and logging; collect the workers that would have run."""
    workers = []

    def fake_run(self, install_signals=True):
        workers.append(self)
        return 0

    monkeypatch.setattr(Worker, "run", fake_run)
    monkeypatch.setattr(cli, "configure_logging", lambda verbosity: workers.append(verbosity))
    monkeypatch.setattr(sys, "path", list(sys.path))  # the CLI adds the cwd
    for name in ("CHANNEL_LAYER_URL", "REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    return workers


def invoke(args, env=None):
    return CliRunner().invoke(cli.runworker, args, env=env or {})


def test_runs_a_worker_with_the_given_options(started, tmp_path):
    """Options reach the Worker: layer, channel filters, threads, name, debug, verbosity."""
    result = invoke([ROUTING, "--layer", f"sqlite:///{tmp_path}/l.db", "--threads", "3",
                     "--only-channels", "websocket.*", "--exclude-channels", "*.disconnect",
                     "--name", "w-1", "--debug", "-v", "2"])
    assert result.exit_code == 0, result.output
    verbosity, worker = started
    assert verbosity == 2
    assert worker.channels == ["websocket.connect", "websocket.receive"]
    assert (worker.threads, worker.name, worker.debug) == (3, "w-1", True)
    assert worker.layer.path == tmp_path / "l.db"


def test_every_option_has_an_environment_variable(started, tmp_path):
    """SWITCHBOARD_WORKER_* variables set routing, layer, filters, threads, name, debug."""
    env = {"SWITCHBOARD_WORKER_ROUTING": ROUTING,
           "SWITCHBOARD_WORKER_LAYER": f"sqlite:///{tmp_path}/e.db",
           "SWITCHBOARD_WORKER_ONLY_CHANNELS": "http.* websocket.connect",
           "SWITCHBOARD_WORKER_THREADS": "4", "SWITCHBOARD_WORKER_NAME": "from-env",
           "SWITCHBOARD_WORKER_DEBUG": "1", "SWITCHBOARD_WORKER_VERBOSITY": "0"}
    result = invoke([], env)
    assert result.exit_code == 0, result.output
    verbosity, worker = started
    assert verbosity == 0
    assert worker.channels == ["http.request", "websocket.connect"]
    assert (worker.threads, worker.name, worker.debug) == (4, "from-env", True)
    assert worker.layer.path == tmp_path / "e.db"


def test_layer_falls_back_to_channel_layer_url_then_redis_url_then_default(
        started, tmp_path, monkeypatch):
    """--layer comes from SWITCHBOARD_WORKER_LAYER, CHANNEL_LAYER_URL, REDIS_URL, the default."""
    monkeypatch.chdir(tmp_path)
    env = {"CHANNEL_LAYER_URL": f"sqlite:///{tmp_path}/a.db", "REDIS_URL": "bogus://"}
    assert invoke([ROUTING], env).exit_code == 0
    assert started[-1].layer.path == tmp_path / "a.db"
    result = invoke([ROUTING], {"REDIS_URL": "bogus://x"})
    assert result.exit_code == 2 and "unknown layer scheme 'bogus'" in result.output
    assert invoke([ROUTING]).exit_code == 0
    expected = tmp_path / DEFAULT_LAYER_URL.removeprefix("sqlite:///")
    assert started[-1].layer.path == expected


def test_layer_object_by_import_path(started, tmp_path, monkeypatch):
    """--layer module:attr uses a layer built in code."""
    monkeypatch.setattr(sys.modules[__name__], "SQLITE_PATH", str(tmp_path / "o.db"))
    result = invoke([ROUTING, "--layer", f"{__name__}:sqlite_layer_factory"])
    assert result.exit_code == 0, result.output
    assert started[-1].layer.path == tmp_path / "o.db"


@pytest.mark.parametrize(("args", "words"), [
    (["no_such_module_zz:routing"], "Invalid value for ROUTING: routing: cannot import module"),
    (["--routing", "tests.bench.app:nope"], "Invalid value for --routing"),
    (["tests.worker.test_cli:ROUTING"], "routing must be a list"),
    ([], "no routing: give it as ROUTING or --routing"),
    ([ROUTING, "--routing", "other:x"], "routing given twice"),
    ([ROUTING, "--layer", "nope://x"], "Invalid value for --layer: unknown layer scheme 'nope'"),
    ([ROUTING, "--layer", "sqlite://"], "needs a file"),
    ([ROUTING, "--layer", "memory://"], "memory:// layer lives inside one process"),
    ([ROUTING, "--layer", "tests.worker.test_cli:memory_layer_object"],
     "memory:// layer lives inside one process"),
    ([ROUTING, "--only-channels", "zzz*"], "no channels to consume"),
    ([ROUTING, "--name", "bad name"], "Invalid value for --name"),
    ([ROUTING, "--threads", "0"], "Invalid value for '--threads'"),
])
def test_bad_input_is_a_usage_error_with_a_clear_message(started, args, words, tmp_path):
    """Bad routing, layers, filters and names exit 2 with a message saying what is wrong."""
    if "--layer" not in args:
        args = [*args, "--layer", f"sqlite:///{tmp_path}/l.db"]
    result = invoke(args)
    assert result.exit_code == 2, result.output
    assert words in result.output
    assert not [w for w in started if isinstance(w, Worker)]


def test_unreachable_layer_fails_fast_with_exit_1(started):
    """A layer that cannot be opened stops the command at once with exit code 1."""
    result = invoke([ROUTING, "--layer", "sqlite:////proc/switchboard-nope/layer.db"])
    assert result.exit_code == 1
    assert "cannot open the channel layer" in result.output


def test_processes_runs_a_supervisor_over_child_commands(started, monkeypatch, tmp_path):
    """--processes N hands N child runworker commands (named name-1..N) to the supervisor."""
    seen = []

    def fake_run(self, install_signals=True):
        seen.append([slot.command for slot in self.slots])
        return 0

    monkeypatch.setattr(cli.Supervisor, "run", fake_run)
    layer = f"sqlite:///{tmp_path}/l.db"
    result = invoke([ROUTING, "--layer", layer, "--processes", "2", "--name", "w",
                     "--threads", "2", "--exclude-channels", "http.*", "--debug"])
    assert result.exit_code == 0, result.output
    (commands,) = seen
    assert len(commands) == 2
    for n, command in enumerate(commands, 1):
        assert command[:4] == [sys.executable, "-m", "worker.cli", ROUTING]
        assert ["--layer", layer] == command[4:6]
        text = " ".join(command)
        assert f"--name w-{n}" in text and "--processes 1" in text and "--threads 2" in text
        assert "--exclude-channels http.*" in text and command[-1] == "--debug"
