"""Choosing a layer by URL (or by import path), as every Switchboard command does.

=============================================  =====================================
``memory://``                                  this process only (tests, dev mode)
``sqlite:///relative/path.db``                 the embedded default: one machine,
``sqlite:////absolute/path.db``                many processes, no service
``redis://[:password@]host:6379/0``            production; ``rediss://`` for TLS
``redis://host1:6379/0,redis://host2:6379/0``  sharded over several servers
``redis+sentinel://host:26379/service/0``      a Sentinel-managed master
``some.module:layer``                          a layer object built in your code
=============================================  =====================================

Layer options (``expiry``, ``capacity`` ...) come as keyword arguments or as
query parameters (``sqlite:///var/layer.db?expiry=30``); keyword arguments win.
"""

from __future__ import annotations

import importlib
from typing import Any

from asgi_spec.base import BaseChannelLayer
from asgi_spec.exceptions import LayerConfigError

#: The embedded SQLite layer in the working directory: what every command uses
#: when no layer is given.
DEFAULT_LAYER_URL = "sqlite:///.switchboard/layer.db"

BACKENDS = {
    "memory": "asgi_spec.layers.memory:MemoryChannelLayer",
    "sqlite": "asgi_spec.layers.sqlite:SQLiteChannelLayer",
    "redis": "asgi_spec.layers.redis:RedisChannelLayer",
    "rediss": "asgi_spec.layers.redis:RedisChannelLayer",
    "redis+sentinel": "asgi_spec.layers.redis:RedisChannelLayer",
}


def _import(path: str) -> Any:
    module_name, _, attr = path.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise LayerConfigError(f"cannot import {module_name!r} for layer {path!r}: {exc}") from exc
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise LayerConfigError(f"module {module_name!r} has no attribute {attr!r}") from None
    return target


def layer_from_url(url: str, **options: Any) -> BaseChannelLayer:
    """Build the layer that ``url`` names, with ``options`` passed to it."""
    if not isinstance(url, str) or "://" not in url:
        raise LayerConfigError(
            f"layer URL must look like scheme://..., got {url!r} "
            f"(schemes: {', '.join(BACKENDS)})"
        )
    scheme = url.split("://", 1)[0].lower()
    if scheme not in BACKENDS:
        raise LayerConfigError(
            f"unknown layer scheme {scheme!r} in {url!r}; known: {', '.join(BACKENDS)}"
        )
    cls = _import(BACKENDS[scheme])
    return cls.from_url(url, **options)


def load_layer(spec: str, **options: Any) -> BaseChannelLayer:
    """A layer from a URL, or the object at ``module:attr`` (which takes no options)."""
    if "://" in spec:
        return layer_from_url(spec, **options)
    if ":" not in spec:
        raise LayerConfigError(
            f"layer {spec!r} is neither a URL (scheme://...) nor an import path (module:attr)"
        )
    layer = _import(spec)
    if options:
        raise LayerConfigError(
            f"options {sorted(options)} cannot apply to the layer object {spec!r}"
        )
    if isinstance(layer, type) or (callable(layer) and not hasattr(layer, "send")):
        layer = layer()  # a layer class or a factory function
    if not (hasattr(layer, "send") and hasattr(layer, "receive")):
        raise LayerConfigError(f"{spec!r} is not a channel layer (it has no send/receive)")
    return layer
