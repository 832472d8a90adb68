"""The Procfile and the Heroku recipe name processes and settings that exist."""

from __future__ import annotations

import json
import shlex
import tomllib

from tests.deploy.helpers import DEPLOY, ROOT

SETTINGS = (DEPLOY / "example" / "chatsite" / "settings.py").read_text(encoding="utf-8")


def _procfile() -> dict[str, str]:
    entries = {}
    for line in (ROOT / "Procfile").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, command = line.partition(":")
            entries[name.strip()] = command.strip()
    return entries


def _scripts() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return set(project["scripts"])


def test_procfile_runs_interface_server_workers_delay_and_migrate():
    """web is ``interfaceserver``, worker is the example's ``manage.py runworker`` (with
    ``WEB_CONCURRENCY`` processes), delay is ``rundelay``, release runs ``migrate``; every
    program is one of our console scripts or ``python`` on a file that exists."""
    procfile = _procfile()
    assert set(procfile) == {"web", "worker", "delay", "release"}
    assert shlex.split(procfile["web"])[0] == "interfaceserver"
    assert shlex.split(procfile["delay"])[0] == "rundelay"
    worker = shlex.split(procfile["worker"])
    assert worker[:3] == ["python", "deploy/example/manage.py", "runworker"]
    assert "--processes" in worker and worker[worker.index("--processes") + 1] == \
        "${WEB_CONCURRENCY:-1}"
    release = shlex.split(procfile["release"])
    assert release[:3] == ["python", "deploy/example/manage.py", "migrate"]
    for command in procfile.values():
        program, *args = shlex.split(command)
        if program == "python":
            assert (ROOT / args[0]).is_file(), command
        else:
            assert program in _scripts(), command


def test_makefile_runs_the_procfile_with_two_workers_by_default():
    """``make run`` migrates, then starts web, worker and delay (not release) with
    honcho, ``WEB_CONCURRENCY`` (default 2) worker processes, bound to 127.0.0.1."""
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    recipe = makefile.split("\nrun:", 1)[1].split("\n\n", 1)[0]
    assert "manage.py migrate" in recipe
    assert "honcho start" in recipe and "web worker delay" in recipe
    assert "-c worker=$${WEB_CONCURRENCY:-2}" in recipe
    assert "INTERFACESERVER_BIND=$${INTERFACESERVER_BIND:-127.0.0.1}" in recipe


def test_heroku_app_json_has_addons_formation_and_settings():
    """app.json asks for Postgres and Redis add-ons, runs web, worker and delay (each a
    Procfile type), generates SECRET_KEY, and every variable it sets is read by the
    settings or by the interface server."""
    app = json.loads((DEPLOY / "heroku" / "app.json").read_text(encoding="utf-8"))
    plans = [addon["plan"].split(":")[0] for addon in app["addons"]]
    assert sorted(plans) == ["heroku-postgresql", "heroku-redis"]
    assert {"web", "worker"} <= set(app["formation"]) <= set(_procfile())
    assert all(entry["quantity"] >= 1 for entry in app["formation"].values())
    assert app["env"]["SECRET_KEY"]["generator"] == "secret"
    from interface_server.cli import main as interfaceserver

    server_envvars = {name for param in interfaceserver.params
                      for name in ([param.envvar] if isinstance(param.envvar, str)
                                   else param.envvar or [])}
    for name in app["env"]:
        if name == "DISABLE_COLLECTSTATIC":  # read by Heroku's buildpack
            continue
        assert f'"{name}"' in SETTINGS or name in server_envvars, name


def test_heroku_requirements_install_the_extras_the_example_needs():
    """The requirements file installs this project with extras that exist and that
    bring Django, WhiteNoise and a Postgres driver."""
    lines = [line for line in (DEPLOY / "heroku" / "requirements.txt").read_text().splitlines()
             if line and not line.startswith("#")]
    assert lines == [".[run,postgres]"]
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    wanted = " ".join(extras["run"] + extras["postgres"])
    for package in ("django", "whitenoise", "psycopg"):
        assert package in wanted
