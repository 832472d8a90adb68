"""The example project reads its configuration from the environment, as platforms give it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from deploy.example.chatsite.env import database_from_url, env_bool, env_list, redact
from tests.deploy.helpers import DEPLOY

EXAMPLE = DEPLOY / "example"


def test_database_url_sqlite_relative_absolute_and_memory(tmp_path):
    """``sqlite:///x.db`` is relative to the project, ``sqlite:////abs`` absolute, and
    SQLite gets WAL and immediate transactions for several writer processes."""
    relative = database_from_url("sqlite:///data/chat.db", tmp_path)
    assert relative["ENGINE"] == "django.db.backends.sqlite3"
    assert relative["NAME"] == str(tmp_path / "data" / "chat.db")
    assert relative["OPTIONS"]["transaction_mode"] == "IMMEDIATE"
    assert "journal_mode=WAL" in relative["OPTIONS"]["init_command"]
    assert database_from_url("sqlite:////var/chat.db", tmp_path)["NAME"] == "/var/chat.db"
    assert database_from_url("sqlite://:memory:", tmp_path)["NAME"] == ":memory:"


def test_database_url_postgres_with_credentials_and_options(tmp_path):
    """A Heroku-style ``postgres://`` URL gives host, port, quoted credentials, options."""
    db = database_from_url("postgres://us%40er:p%3Ass@db.example.com:6543/chat?sslmode=require",
                           tmp_path)
    assert db == {**db, "ENGINE": "django.db.backends.postgresql", "NAME": "chat",
                  "USER": "us@er", "PASSWORD": "p:ss", "HOST": "db.example.com",
                  "PORT": "6543", "OPTIONS": {"sslmode": "require"}}
    assert database_from_url("postgresql://h/x", tmp_path)["HOST"] == "h"


def test_database_url_errors_name_the_problem_without_the_password(tmp_path):
    """An unknown scheme or a missing database name is a ``ValueError`` whose message
    shows the URL with its password redacted."""
    with pytest.raises(ValueError, match=r"mysql.*u:\*\*\*@") as caught:
        database_from_url("mysql://u:secret@h/db", tmp_path)
    assert "secret" not in str(caught.value)
    with pytest.raises(ValueError, match="names no database"):
        database_from_url("postgres://u:secret@h/", tmp_path)
    assert redact("redis://h:6379/0") == "redis://h:6379/0"


def test_env_bool_and_list(monkeypatch):
    """Booleans accept the usual spellings and refuse others; lists split on commas."""
    monkeypatch.setenv("SB_FLAG", "Yes")
    assert env_bool("SB_FLAG", False) is True
    monkeypatch.setenv("SB_FLAG", "0")
    assert env_bool("SB_FLAG", True) is False
    monkeypatch.setenv("SB_FLAG", "maybe")
    with pytest.raises(ValueError, match="SB_FLAG"):
        env_bool("SB_FLAG", False)
    monkeypatch.delenv("SB_FLAG")
    assert env_bool("SB_FLAG", True) is True
    monkeypatch.setenv("SB_LIST", " a.example , ,b.example")
    assert env_list("SB_LIST", []) == ["a.example", "b.example"]


_DUMP = """
import json
from django.conf import settings
print(json.dumps({"db": settings.DATABASES["default"]["NAME"],
                  "engine": settings.DATABASES["default"]["ENGINE"],
                  "layer": settings.CHANNEL_LAYERS["default"]["BACKEND"],
                  "debug": settings.DEBUG, "hosts": settings.ALLOWED_HOSTS,
                  "secret": settings.SECRET_KEY, "longpoll": settings.LONGPOLL_TIMEOUT}))
"""


def _settings(env: dict[str, str]) -> dict:
    clean = {k: v for k, v in os.environ.items()
             if k not in {"REDIS_URL", "CHANNEL_LAYER_URL", "DATABASE_URL", "DEBUG",
                          "SECRET_KEY", "ALLOWED_HOSTS", "LONGPOLL_TIMEOUT"}}
    clean.update(env, DJANGO_SETTINGS_MODULE="chatsite.settings", PYTHONPATH=str(EXAMPLE))
    done = subprocess.run([sys.executable, "-c", _DUMP], env=clean, capture_output=True,
                          text=True, timeout=60, cwd=Path(__file__).parent)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_settings_defaults_are_local_sqlite_everything():
    """Without configuration: SQLite database next to manage.py, the embedded SQLite
    layer, DEBUG off, local hosts only, the long-poll held 25 s."""
    found = _settings({})
    assert found["db"] == str(EXAMPLE / "chat.db")
    assert found["layer"].startswith("sqlite:///")
    assert found["debug"] is False
    assert found["hosts"] == ["127.0.0.1", "localhost", "[::1]"]
    assert found["secret"].startswith("django-insecure-")
    assert found["longpoll"] == 25.0


def test_settings_honour_the_platform_variables():
    """``DATABASE_URL``, ``REDIS_URL``, ``SECRET_KEY``, ``DEBUG``, ``ALLOWED_HOSTS`` and
    ``LONGPOLL_TIMEOUT`` are used when set; ``CHANNEL_LAYER_URL`` wins over ``REDIS_URL``,
    as it does for ``interfaceserver`` and ``rundelay``."""
    found = _settings({"DATABASE_URL": "postgres://u:p@db:5432/chat",
                       "REDIS_URL": "redis://cache:6379/2", "SECRET_KEY": "s3cret",
                       "DEBUG": "true", "ALLOWED_HOSTS": "a.example,b.example",
                       "LONGPOLL_TIMEOUT": "5"})
    assert (found["engine"], found["db"]) == ("django.db.backends.postgresql", "chat")
    assert found["layer"] == "redis://cache:6379/2"
    assert (found["secret"], found["debug"]) == ("s3cret", True)
    assert found["hosts"] == ["a.example", "b.example"]
    assert found["longpoll"] == 5.0
    both = _settings({"REDIS_URL": "redis://cache:6379/2",
                      "CHANNEL_LAYER_URL": "sqlite:///tmp/x.db"})
    assert both["layer"] == "sqlite:///tmp/x.db"
