"""The Django router: the project's routing, Django views as the ``http.request`` fallback.

How this works: ``DjangoRouter(routing)`` is a ``worker.routing.Router`` over
the project's routes followed by one catch-all route, ``http.request`` ->
``worker.django.handler.view_consumer``, so every HTTP request that no
project route takes goes through Django's URLconf, middleware and views.
Every consumer it returns is wrapped so that ``consumer_started`` and
``consumer_finished`` are sent around it (the app recycles database
connections on both). The wrapping happens at match time, on the consumer
that matched, so nested ``include``\\ s need no rewriting.

``channel_routing`` / ``channel_routing_<alias>`` (module attributes made on
demand) are these routers for import paths: ``runworker
worker.django.routing:channel_routing``; they set Django up first when the
process has not (a supervised child).
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

from worker.django import signals
from worker.routing import Match, Route, Router, routes_of


def _with_signals(consumer: Any) -> Any:
    if getattr(consumer, "_switchboard_signals", False):
        return consumer

    @functools.wraps(consumer)
    def run(message: Any, **kwargs: Any) -> Any:
        signals.consumer_started.send(sender=consumer, message=message)
        try:
            result = consumer(message, **kwargs)
        except BaseException:
            signals.consumer_finished.send(sender=consumer, message=message)
            raise
        if inspect.isawaitable(result):
            return _finish_async(consumer, message, result)
        signals.consumer_finished.send(sender=consumer, message=message)
        return result

    run._switchboard_signals = True  # type: ignore[attr-defined]
    return run


async def _finish_async(consumer: Any, message: Any, awaitable: Any) -> Any:
    try:
        return await awaitable
    finally:
        signals.consumer_finished.send(sender=consumer, message=message)


class DjangoRouter(Router):
    """A ``Router`` whose unmatched ``http.request`` messages go to Django views."""

    def __init__(self, routing: Any, *, view_fallback: bool = True) -> None:
        entries = routes_of(routing, "ROUTING") if routing is not None else []
        if view_fallback:
            from worker.django.handler import view_consumer

            entries = [*entries, Route("http.request", view_consumer)]
        super().__init__(entries)

    def match_content(self, channel: str, content: Any) -> Match | None:
        found = super().match_content(channel, content)
        if found is None:
            return None
        return _with_signals(found[0]), found[1]


def router_for(alias: str = "default") -> DjangoRouter:
    """The router of ``CHANNEL_LAYERS[alias]`` (Django must be set up)."""
    from worker.django.layers import get_channel_layer

    return get_channel_layer(alias).router


def __getattr__(name: str) -> Any:
    if name == "channel_routing" or name.startswith("channel_routing_"):
        from worker.django.layers import ensure_django

        ensure_django()
        return router_for(name.removeprefix("channel_routing").removeprefix("_") or "default")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
