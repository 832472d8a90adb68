"""``daphne benchsite.asgi:application``: Django over HTTP, two Channels 4 WebSocket routes."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchsite.settings")
os.environ.setdefault("BENCH_SERVER", "daphne")

from django.core.asgi import get_asgi_application

django_application = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

from benchsite.channels_consumers import Broadcast, Echo  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_application,
        "websocket": URLRouter(
            [
                path("ws/echo/", Echo.as_asgi()),
                path("ws/group/", Broadcast.as_asgi()),
            ]
        ),
    }
)
