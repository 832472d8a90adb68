"""Settings of the example chat project, read from the environment.

| variable                     | default                                  |
|------------------------------|------------------------------------------|
| ``SECRET_KEY``               | an insecure development key              |
| ``DEBUG``                    | off                                      |
| ``ALLOWED_HOSTS``            | ``127.0.0.1,localhost,[::1]``            |
| ``CSRF_TRUSTED_ORIGINS``     | none (set ``https://your.host`` behind TLS) |
| ``DATABASE_URL``             | ``sqlite:///chat.db`` (next to manage.py) |
| ``CHANNEL_LAYER_URL``        | then ``REDIS_URL``, then the embedded SQLite layer |
| ``LONGPOLL_TIMEOUT``         | 25 (seconds a long-poll request is held)  |

The interface server (``interfaceserver``) and the delay server
(``rundelay``) read ``CHANNEL_LAYER_URL`` and ``REDIS_URL`` in the same
order, so every process of the ``Procfile`` meets on one layer.

Static files: WhiteNoise's middleware serves them from the workers (with
``WHITENOISE_USE_FINDERS`` the app directories are served without a
``collectstatic`` step; ``collectstatic`` into ``STATIC_ROOT`` adds
compressed copies). Behind nginx, let nginx serve ``STATIC_ROOT`` instead
(``deploy/nginx/switchboard.conf``).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from chatsite.env import database_from_url, env_bool, env_list

from asgi_spec import DEFAULT_LAYER_URL

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = env_bool("DEBUG", False)
# Django's `check --deploy` flags keys with this prefix; production sets SECRET_KEY.
SECRET_KEY = os.environ.get("SECRET_KEY") or "django-insecure-switchboard-example-dev-key"
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
# Behind a TLS-terminating proxy (Heroku's router, nginx): trust its scheme header.
if env_bool("SECURE_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

INSTALLED_APPS = [
    "worker.django",  # runworker, runserver, the HTTP bridge
    "django.contrib.contenttypes",
    "django.contrib.staticfiles",
    "chat",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
ROOT_URLCONF = "chatsite.urls"
TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "DIRS": [],
    "APP_DIRS": True,
    "OPTIONS": {"context_processors": ["django.template.context_processors.request"]},
}]

DATABASES = {
    "default": database_from_url(os.environ.get("DATABASE_URL") or "sqlite:///chat.db",
                                 BASE_DIR),
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
WHITENOISE_USE_FINDERS = True
# collectstatic is optional here (the finders serve the files), so an absent
# STATIC_ROOT is expected, not worth WhiteNoise's warning in every worker.
warnings.filterwarnings("ignore", message=r"No directory at: .*staticfiles")

# Channels: one layer for every process. ROUTING lists the consumers; plain
# HTTP requests that no route takes go to the Django views of ROOT_URLCONF.
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": (os.environ.get("CHANNEL_LAYER_URL") or os.environ.get("REDIS_URL")
                    or DEFAULT_LAYER_URL),
        "ROUTING": "chatsite.routing.channel_routing",
    },
}

#: Seconds the long-poll endpoint holds a request open when nothing happens.
LONGPOLL_TIMEOUT = float(os.environ.get("LONGPOLL_TIMEOUT", "25"))
#: Messages a newcomer gets as the room's history.
CHAT_HISTORY = 50
