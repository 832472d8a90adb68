"""Routing: which consumer handles a message, decided by its channel and content.

Pure code: no layer, no I/O. The shapes are those of Channels 1.x, so existing
routing ports by changing imports::

    channel_routing = [
        route("http.request", views.index, path=r"^/$"),
        route("websocket.receive", chat.receive, path=r"^/chat/(?P<room>\\w+)/$"),
        route_class(ChatConsumer, path=r"^/chat2/"),
        include("myapp.routing:api_routing", path=r"^/api"),
    ]

* A filter is a regex applied with ``re.match`` (anchored at the start only)
  to the message key of the same name. A str value is matched as is, a bytes
  value (``query_string``) as latin-1 text; a missing key or any other type
  does not match. Only named groups are allowed; they become the consumer's
  keyword arguments (groups that matched nothing are left out).
* ``include(routing, **prefix_filters)`` matches its filters first, strips
  the matched prefix from those keys, then matches the inner routes against
  the rest. Keyword arguments from both levels are merged; inner ones win.
* Routing may be a list of routes, a ``{channel: consumer}`` dict, a
  ``Router``, or an import path (``"pkg.mod:attr"`` or ``"pkg.mod.attr"``) to
  any of those. The first matching route wins.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from asgi_spec import names
from asgi_spec.exceptions import InvalidChannelName
from worker.exceptions import ImportPathError, RouteError
from worker.importing import import_object

Consumer = Callable[..., Any]
Match = tuple[Consumer, dict[str, Any]]

__all__ = ["Include", "Route", "RouteClass", "Router", "include", "route", "route_class"]


def _describe(obj: object) -> str:
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
    text = f"{type(obj).__name__} {name}" if name else f"{type(obj).__name__} {obj!r}"
    return text if len(text) <= 80 else text[:77] + "..."


def _channel_names(channels: object, where: str) -> tuple[str, ...]:
    if isinstance(channels, str):
        channels = (channels,)
    if not isinstance(channels, Iterable):
        raise RouteError(f"{where}: channel must be a str or a list of str, got "
                         f"{_describe(channels)}")
    result = []
    for name in channels:
        try:
            result.append(names.validate_channel_name(name, receive=True))
        except InvalidChannelName as exc:
            raise RouteError(f"{where}: invalid channel name: {exc}") from None
    if not result:
        raise RouteError(f"{where}: no channel names given")
    return tuple(result)


def _compile_filters(filters: Mapping[str, Any], where: str) -> dict[str, re.Pattern[str]]:
    compiled = {}
    for key, pattern in filters.items():
        if isinstance(pattern, re.Pattern):
            regex = pattern
        elif isinstance(pattern, str):
            try:
                regex = re.compile(pattern)
            except re.error as exc:
                raise RouteError(f"{where}: filter {key}={pattern!r} is not a valid regex: "
                                 f"{exc}") from None
        else:
            raise RouteError(f"{where}: filter {key}= must be a regex str, got "
                             f"{_describe(pattern)}")
        if not isinstance(regex.pattern, str):
            raise RouteError(f"{where}: filter {key}= must be a str regex, not bytes")
        if regex.groups != len(regex.groupindex):
            raise RouteError(
                f"{where}: filter {key}={regex.pattern!r} has an unnamed group; only named "
                "groups (?P<name>...) are allowed (use (?:...) for grouping)"
            )
        compiled[key] = regex
    return compiled


def _resolve_consumer(consumer: object, where: str) -> Consumer:
    if isinstance(consumer, str):
        try:
            consumer = import_object(consumer)
        except ImportPathError as exc:
            raise RouteError(f"{where}: {exc}") from None
    if not callable(consumer):
        raise RouteError(f"{where}: consumer must be callable, got {_describe(consumer)}")
    return consumer


def _filter_value(content: Mapping[str, Any], key: str) -> str | None:
    value = content.get(key)
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return None


def _match_filters(filters: dict[str, re.Pattern[str]], content: Mapping[str, Any],
                   kwargs: dict[str, Any], stripped: dict[str, str] | None = None) -> bool:
    """Apply ``filters``; collect named groups in ``kwargs``, remainders in ``stripped``."""
    for key, regex in filters.items():
        value = _filter_value(content, key)
        if value is None:
            return False
        found = regex.match(value)
        if found is None:
            return False
        kwargs.update((k, v) for k, v in found.groupdict().items() if v is not None)
        if stripped is not None:
            stripped[key] = value[found.end():]
    return True


class Route:
    """Send messages on ``channels`` whose keys match ``filters`` to ``consumer``."""

    def __init__(self, channels: str | Iterable[str], consumer: Consumer | str,
                 **filters: Any) -> None:
        where = f"route({channels!r})"
        self.channel_names = frozenset(_channel_names(channels, where))
        self.consumer = _resolve_consumer(consumer, where)
        self.filters = _compile_filters(filters, where)

    def match(self, channel: str, content: Mapping[str, Any]) -> Match | None:
        """``(consumer, kwargs)`` if this route takes the message, else ``None``."""
        if channel not in self.channel_names:
            return None
        kwargs: dict[str, Any] = {}
        if not _match_filters(self.filters, content, kwargs):
            return None
        return self.consumer, kwargs

    def __repr__(self) -> str:
        filters = {k: v.pattern for k, v in self.filters.items()}
        return (f"<{type(self).__name__} {sorted(self.channel_names)} -> "
                f"{_describe(self.consumer)} {filters}>")


class RouteClass(Route):
    """A route to a class consumer, on the channels its ``channel_names()`` lists."""

    def __init__(self, consumer: type | str, **filters: Any) -> None:
        cls = _resolve_consumer(consumer, f"route_class({consumer!r})")
        get_names = getattr(cls, "channel_names", None)
        if not callable(get_names):
            raise RouteError(
                f"route_class({_describe(cls)}): the class has no channel_names() "
                "(subclass worker.consumers.BaseConsumer)"
            )
        super().__init__(tuple(get_names()), cls, **filters)


class Include:
    """Inner routing, entered when the prefix filters match; the prefixes are stripped."""

    def __init__(self, routing: Any, **prefix_filters: Any) -> None:
        where = f"include({routing!r})" if isinstance(routing, str) else "include(...)"
        self.routes = routes_of(routing, where)
        self.filters = _compile_filters(prefix_filters, where)
        self.channel_names = frozenset().union(*(r.channel_names for r in self.routes))

    def match(self, channel: str, content: Mapping[str, Any]) -> Match | None:
        """The first inner match after stripping the matched prefixes, else ``None``."""
        if channel not in self.channel_names:
            return None
        kwargs: dict[str, Any] = {}
        stripped: dict[str, str] = {}
        if not _match_filters(self.filters, content, kwargs, stripped):
            return None
        inner_content = {**content, **stripped} if stripped else content
        for entry in self.routes:
            found = entry.match(channel, inner_content)
            if found is not None:
                return found[0], {**kwargs, **found[1]}
        return None

    def __repr__(self) -> str:
        filters = {k: v.pattern for k, v in self.filters.items()}
        return f"<Include {filters} of {len(self.routes)} routes>"


RouteEntry = Route | Include


def routes_of(routing: Any, where: str = "routing") -> list[RouteEntry]:
    """The route entries of any accepted routing form (see the module docstring)."""
    if isinstance(routing, str):
        try:
            routing = import_object(routing)
        except ImportPathError as exc:
            raise RouteError(f"{where}: {exc}") from None
    if isinstance(routing, Router):
        return list(routing.routes)
    if isinstance(routing, Mapping):
        return [Route(channel, consumer) for channel, consumer in routing.items()]
    if isinstance(routing, list | tuple):
        for index, entry in enumerate(routing):
            if not isinstance(entry, Route | Include):
                raise RouteError(
                    f"{where}: entry {index} is {_describe(entry)}, not a route; "
                    "wrap it as route('channel.name', consumer)"
                )
        return list(routing)
    raise RouteError(
        f"{where}: routing must be a list of routes, a {{channel: consumer}} dict or an "
        f"import path, got {_describe(routing)}"
    )


class Router:
    """Matches messages against a routing, first match wins.

    ``channels`` is every channel name the routing covers: what a worker
    receives from.
    """

    def __init__(self, routing: Any) -> None:
        self.routes = routes_of(routing)
        self.channels = frozenset().union(*(r.channel_names for r in self.routes))
        # Per channel, the entries that may take it, in routing order.
        self._by_channel: dict[str, list[RouteEntry]] = {}
        for entry in self.routes:
            for channel in entry.channel_names:
                self._by_channel.setdefault(channel, []).append(entry)

    def match(self, message: Any) -> Match | None:
        """``(consumer, kwargs)`` for a ``Message`` (``.channel``, ``.content``), or ``None``."""
        channel = getattr(message.channel, "name", message.channel)
        return self.match_content(channel, message.content)

    def match_content(self, channel: str, content: Mapping[str, Any]) -> Match | None:
        """``(consumer, kwargs)`` for ``content`` received on ``channel``, or ``None``."""
        for entry in self._by_channel.get(channel, ()):
            found = entry.match(channel, content)
            if found is not None:
                return found
        return None

    def __repr__(self) -> str:
        return f"<Router {len(self.routes)} routes over {sorted(self.channels)}>"


def route(channel: str | Iterable[str], consumer: Consumer | str, **filters: Any) -> Route:
    """A route from ``channel`` (optionally filtered on message keys) to ``consumer``."""
    return Route(channel, consumer, **filters)


def route_class(consumer: type | str, **filters: Any) -> RouteClass:
    """A route to a class consumer over the channels of its ``channel_names()``."""
    return RouteClass(consumer, **filters)


def include(routing: Any, **prefix_filters: Any) -> Include:
    """Nest ``routing`` under prefix filters, e.g. ``include(chat_routing, path=r"^/chat")``."""
    return Include(routing, **prefix_filters)
