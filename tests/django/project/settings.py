"""Settings of the small Django project the integration tests run (not for production)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

SECRET_KEY = "switchboard-tests-only"
DEBUG = False
ALLOWED_HOSTS = ["testserver", "localhost", "127.0.0.1", "example.com"]
INSTALLED_APPS = [
    "worker.django",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "tests.django.project.notes",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "tests.django.project.urls"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("SWITCHBOARD_TEST_DB", ":memory:"),
        # A file, not memory: ChannelLiveServerTestCase's worker processes share it.
        "TEST": {"NAME": str(Path(tempfile.gettempdir())
                             / f"switchboard-django-tests-{os.getpid()}.sqlite3")},
    }
}
TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates", "DIRS": [], "APP_DIRS": True,
    "OPTIONS": {"context_processors": [
        "django.template.context_processors.request",
        "django.contrib.auth.context_processors.auth",
        "django.contrib.messages.context_processors.messages",
    ]},
}]
STATIC_URL = "/static/"
STATICFILES_DIRS = [HERE / "static"]
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast tests

# The layer comes from the URL shortcut: memory:// in tests, sqlite:/// when a
# test runs real processes (it sets CHANNEL_LAYER_URL).
CHANNEL_LAYER_URL = os.environ.get("CHANNEL_LAYER_URL", "memory://")
CHANNEL_LAYERS = {
    "default": {
        "ROUTING": "tests.django.project.routing.channel_routing",
    },
}
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "loggers": {"django.request": {"level": "CRITICAL"}},
}
