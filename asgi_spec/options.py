"""Layer options given as URL query parameters, checked against a backend's signature."""

from __future__ import annotations

import inspect
from typing import Any
from urllib.parse import parse_qsl

from asgi_spec.exceptions import LayerConfigError

#: Options whose query value is a list: comma-separated, and/or the key repeated
#: (``?at_least_once=tasks.*,jobs.*`` or ``?at_least_once=tasks.*&at_least_once=jobs.*``).
LIST_OPTIONS = frozenset({"at_least_once"})


def parse_option(value: str) -> Any:
    """A query-string value as the int, float, bool or str it spells."""
    lowered = value.lower()
    if lowered in ("true", "yes", "on"):
        return True
    if lowered in ("false", "no", "off"):
        return False
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def parse_query(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Query ``(key, value)`` pairs as options; ``LIST_OPTIONS`` become lists of str."""
    options: dict[str, Any] = {}
    for key, value in pairs:
        if key in LIST_OPTIONS:
            items = options.setdefault(key, [])
            items.extend(part.strip() for part in value.split(",") if part.strip())
        else:
            options[key] = parse_option(value)
    return options


def split_options(url: str) -> tuple[str, dict[str, Any]]:
    """``url`` without its query string, and the query parsed into options."""
    bare, _, query = url.partition("?")
    return bare, parse_query(parse_qsl(query))


def check_options(cls: type, options: dict[str, Any]) -> None:
    """Raise ``LayerConfigError`` for options that ``cls`` (or its bases) do not take."""
    allowed: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters.values()
        allowed |= {p.name for p in params if p.kind is p.KEYWORD_ONLY or
                    (p.kind is p.POSITIONAL_OR_KEYWORD and p.name != "self")}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise LayerConfigError(
            f"unknown layer option(s) {', '.join(unknown)} for {cls.__name__}; "
            f"known: {', '.join(sorted(allowed))}"
        )
