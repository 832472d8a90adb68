"""Layer options given as URL query parameters, checked against a backend's signature."""

from __future__ import annotations

import inspect
from typing import Any
from urllib.parse import parse_qsl

from asgi_spec.exceptions import LayerConfigError


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


def split_options(url: str) -> tuple[str, dict[str, Any]]:
    """``url`` without its query string, and the query parsed into options."""
    bare, _, query = url.partition("?")
    options = {key: parse_option(value) for key, value in parse_qsl(query)}
    return bare, options


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
