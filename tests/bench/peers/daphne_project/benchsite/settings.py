"""Settings of the Channels 4 benchmark peer: the smallest project that serves
a Django view, with no database and the common middleware only."""

import os

SECRET_KEY = "benchmark-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "benchsite.urls"
INSTALLED_APPS: list[str] = []
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
DATABASES = {}
USE_TZ = True
ASGI_APPLICATION = "benchsite.asgi.application"
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "root": {"handlers": [], "level": "WARNING"},
}

# channels_redis on the benchmark's own redis-server. With redis-py 8's
# defaults (a 5 s socket timeout, a bounded pool) group fan-out to 5,000
# sockets fails, so the peer gets a longer timeout and a larger pool: it is
# measured as well configured, not as broken.
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            "hosts": [
                {
                    "address": os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"),
                    "socket_timeout": 30,
                    "max_connections": 2000,
                }
            ],
        },
    },
}
