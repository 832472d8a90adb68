"""Static files for the development server: ``http.request`` under ``STATIC_URL`` -> finders.

``static_route()`` is the route ``manage.py runserver`` puts first when it
serves static files (``DEBUG`` or ``--insecure``, like Django's own
runserver); the files come from ``django.contrib.staticfiles``' finders, so
no ``collectstatic`` is needed. Not for production: serve ``STATIC_ROOT``
from a web server or a CDN.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.handlers.exception import response_for_exception
from django.http import Http404

from worker.django.handler import AsgiHandler, ViewConsumer
from worker.routing import Route


class StaticFilesHandler(AsgiHandler):
    """Answers every request with the static file its path names (or 404)."""

    def load_middleware(self, is_async: bool = False) -> None:
        self._middleware_chain = None  # static files skip the project's middleware

    def get_response(self, request: Any) -> Any:
        from django.contrib.staticfiles.views import serve

        base = urlsplit(settings.STATIC_URL).path
        try:
            return serve(request, request.path_info.removeprefix(base), insecure=True)
        except Http404 as exc:
            return response_for_exception(request, exc)


class StaticFilesConsumer(ViewConsumer):
    handler_class = StaticFilesHandler


static_consumer = StaticFilesConsumer()


def static_route() -> Route | None:
    """The route for ``STATIC_URL`` paths; ``None`` when ``STATIC_URL`` is a full URL."""
    static_url = settings.STATIC_URL or ""
    parts = urlsplit(static_url)
    if parts.netloc or not parts.path.startswith("/"):
        return None
    return Route("http.request", static_consumer, path="^" + re.escape(parts.path))
