"""Settings of the benchmark's Django project, the same for every server.

A project as ``startproject`` makes it (its apps, middleware and SQLite
database, with the admin), plus the channel layer of the server it runs on:

* ``BENCH_SERVER=switchboard`` -- ``worker.django`` and Switchboard's Redis layer,
  routed by ``benchsite.routing`` (``interfaceserver`` + ``manage.py runworker``);
* ``BENCH_SERVER=daphne`` -- channels_redis for the Channels 4 consumers of
  ``benchsite.asgi`` (``daphne``);
* ``BENCH_SERVER=django`` -- no layer: Django's own ASGI handler
  (``benchsite.django_asgi``, e.g. under uvicorn), HTTP only.

Unset, it is whichever of ``worker`` and ``channels`` can be imported.
``BENCH_REDIS_URL`` names the Redis server.
"""

import os
from importlib.util import find_spec
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = "benchmark-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "benchsite.urls"
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("BENCH_DB") or BASE_DIR / "bench.sqlite3",
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
STATIC_URL = "static/"
USE_TZ = True
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "root": {"handlers": [], "level": "WARNING"},
}

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
SERVER = os.environ.get("BENCH_SERVER") or (
    "switchboard" if find_spec("worker") else "daphne" if find_spec("channels") else "django"
)

if SERVER == "switchboard":
    # worker.django first: its runserver/runworker commands, the HTTP bridge.
    INSTALLED_APPS = ["worker.django", *INSTALLED_APPS]
    CHANNEL_LAYERS = {
        "default": {"BACKEND": REDIS_URL, "ROUTING": "benchsite.routing.channel_routing"},
    }
elif SERVER == "daphne":
    ASGI_APPLICATION = "benchsite.asgi.application"
    # With redis-py 8's defaults (a 5 s socket timeout, a bounded pool) group
    # fan-out to 5,000 sockets fails, so the peer gets a longer timeout and a
    # larger pool: it is measured as well configured, not as broken.
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": [{"address": REDIS_URL, "socket_timeout": 30, "max_connections": 2000}],
            },
        },
    }
elif SERVER != "django":
    raise ValueError(f"BENCH_SERVER must be switchboard, daphne or django, not {SERVER!r}")
