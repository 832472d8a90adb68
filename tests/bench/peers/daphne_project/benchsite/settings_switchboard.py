"""The same project served by Switchboard: ``interfaceserver`` + ``runworker
worker.django.routing:channel_routing`` with these settings. Only the channel
layer differs from ``settings``: Switchboard's Redis layer on the same server."""

import os

from benchsite.settings import *  # noqa: F403

INSTALLED_APPS = ["worker.django"]
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"),
        "ROUTING": "benchsite.switchboard_routing.channel_routing",
    },
}
