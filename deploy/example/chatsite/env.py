"""Reading the process environment the twelve-factor way: booleans, lists, ``DATABASE_URL``.

The chat project is configured only through environment variables, the way
Heroku, docker compose and systemd's ``EnvironmentFile=`` hand configuration
to a process. ``database_from_url`` understands the URLs platforms give:

* ``sqlite:///relative/path.db`` and ``sqlite:////absolute/path.db``
  (``sqlite://:memory:`` too);
* ``postgres://user:password@host:5432/name`` (``postgresql://`` and
  ``pgsql://`` are the same), query parameters such as ``?sslmode=require``
  becoming ``OPTIONS``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
_POSTGRES = {"postgres", "postgresql", "pgsql"}


def env_bool(name: str, default: bool) -> bool:
    """``$name`` as a boolean (1/true/yes/on or 0/false/no/off); ``default`` when unset."""
    value = os.environ.get(name)
    if value is None:
        return default
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"${name} must be a boolean (1/0, true/false, yes/no, on/off), "
                     f"got {value!r}")


def env_list(name: str, default: list[str]) -> list[str]:
    """``$name`` as a comma-separated list (blanks dropped); ``default`` when unset."""
    value = os.environ.get(name)
    if value is None:
        return list(default)
    return [item.strip() for item in value.split(",") if item.strip()]


def sqlite_options() -> dict[str, Any]:
    """SQLite settings for several worker processes writing one file.

    WAL lets readers run beside a writer; ``IMMEDIATE`` transactions take the
    write lock up front, so two writers queue (up to ``timeout`` seconds)
    instead of failing with "database is locked" half-way.
    """
    return {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }


def database_from_url(url: str, base_dir: Path) -> dict[str, Any]:
    """One entry of Django's ``DATABASES`` for ``url`` (relative SQLite paths: ``base_dir``)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "sqlite":
        # sqlite:///rel.db -> path "/rel.db"; sqlite:////abs.db -> path "//abs.db"
        if parts.netloc == ":memory:" or parts.path in ("", "/:memory:"):
            name: str = ":memory:"
        else:
            raw = unquote(parts.path)
            path = Path(raw[1:]) if raw.startswith("/") else Path(raw)
            name = str(path if path.is_absolute() else base_dir / path)
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": name,
                "OPTIONS": sqlite_options()}
    if scheme in _POSTGRES:
        name = unquote(parts.path.lstrip("/"))
        if not name:
            raise ValueError(f"DATABASE_URL names no database: {redact(url)!r}")
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": name,
            "USER": unquote(parts.username or ""),
            "PASSWORD": unquote(parts.password or ""),
            "HOST": unquote(parts.hostname or ""),
            "PORT": str(parts.port or ""),
            "OPTIONS": dict(parse_qsl(parts.query)),
            # Workers run many short consumers: keep a connection for a minute,
            # checked before reuse (a restarted database is then noticed).
            "CONN_MAX_AGE": 60,
            "CONN_HEALTH_CHECKS": True,
        }
    raise ValueError(f"DATABASE_URL scheme {scheme!r} is not supported (use sqlite:// or "
                     f"postgres://): {redact(url)!r}")


def redact(url: str) -> str:
    """``url`` with its password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()
