"""``uvicorn benchsite.django_asgi:application``: Django's own ASGI handler (HTTP only)."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchsite.settings")
os.environ.setdefault("BENCH_SERVER", "django")

from django.core.asgi import get_asgi_application

application = get_asgi_application()
