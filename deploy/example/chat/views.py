"""The chat's pages, and the HTTP half of the long-poll transport (posting a message).

These are ordinary Django views. They run in a worker, like the consumers:
the interface server turned the request into an ``http.request`` message
and ``runworker`` handed it to Django because no channel route took it.
"""

from __future__ import annotations

import json
from urllib.parse import urlencode

from chat import rooms
from chat.models import Room
from django.db.models import Count
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.text import slugify
from django.views.decorators.http import require_GET, require_http_methods

MAX_SLUG = 50


def _slug(slug: str) -> str:
    if len(slug) > MAX_SLUG:
        raise Http404("room names have at most 50 characters")
    return slug


@require_GET
def index(request: HttpRequest) -> HttpResponse:
    """The rooms, busiest first, and a form to enter one."""
    listed = Room.objects.annotate(count=Count("messages")).order_by("-count", "slug")[:20]
    return render(request, "chat/index.html", {"rooms": listed})


@require_GET
def healthz(request: HttpRequest) -> HttpResponse:
    """``ok`` when a worker answers and the database responds (for load balancers)."""
    Room.objects.exists()
    return HttpResponse("ok", content_type="text/plain")


@require_GET
def enter(request: HttpRequest) -> HttpResponse:
    """The index form's target: ``?room=<slug>&name=<name>`` -> that room's page."""
    slug = slugify(request.GET.get("room", ""))[:MAX_SLUG] or "lobby"
    url = reverse("room", args=[slug])
    name = request.GET.get("name", "").strip()
    return redirect(f"{url}?{urlencode({'name': name})}" if name else url)


def _room_page(request: HttpRequest, slug: str, transport: str) -> HttpResponse:
    room = rooms.get_room(_slug(slug))
    return render(request, "chat/room.html", {
        "room": room,
        "name": rooms.clean_name(request.GET.get("name")) if request.GET.get("name") else "",
        "transport": transport,
    })


@require_GET
def room(request: HttpRequest, slug: str) -> HttpResponse:
    """The chat page: a WebSocket, falling back to long-polling when it cannot connect."""
    return _room_page(request, slug, "auto")


@require_GET
def room_longpoll(request: HttpRequest, slug: str) -> HttpResponse:
    """The same page, on long-polling only (for networks that break WebSockets)."""
    return _room_page(request, slug, "longpoll")


@require_GET
def stream(request: HttpRequest, slug: str) -> HttpResponse:
    """A read-only view of the room, fed by server-sent events."""
    return render(request, "chat/stream.html", {"room": rooms.get_room(_slug(slug))})


@require_http_methods(["POST"])
def messages(request: HttpRequest, slug: str) -> HttpResponse:
    """Post ``{"stream": "chat", "payload": {"text": ...}}`` (the long-poll send)."""
    try:
        frame = json.loads(request.body or b"{}")
        payload = frame["payload"] if "stream" in frame else frame
        text = payload["text"]
    except (ValueError, KeyError, TypeError):
        return JsonResponse({"error": 'send {"stream": "chat", "payload": {"text": "..."}}'},
                            status=400)
    posted = rooms.post(rooms.get_room(_slug(slug)), request.GET.get("name", ""), text)
    if posted is None:
        return JsonResponse({"error": "empty message"}, status=400)
    return JsonResponse(posted, status=201)
