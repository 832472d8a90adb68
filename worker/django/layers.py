"""``CHANNEL_LAYERS``: reading the settings and building each alias's layer once.

How this works: ``layer_settings(alias)`` normalises one alias's settings to a
``LayerSettings`` (where the layer comes from, its options, its routing) and
raises ``InvalidChannelLayerError`` with a message naming the setting when
something is wrong; the system checks (``worker.django.checks``) call the same
function, so ``manage.py check`` reports what a worker would fail on.
``get_channel_layer(alias)`` builds the layer the first time it is asked for
and caches a ``ChannelLayerWrapper`` (the layer plus ``.router`` and
``.alias``) per alias, process-wide and thread-safe. The cache is dropped when
a test changes ``CHANNEL_LAYERS`` with ``override_settings``; the test tools
swap layers with ``swap_layers``.

Where the layer comes from, first match wins:

1. ``CHANNEL_LAYERS[alias]["URL"]``, or a ``BACKEND`` containing ``://``;
2. ``BACKEND`` as a class path (``pkg.mod.Class`` or ``pkg.mod:Class``),
   built as ``Class(**CONFIG)``;
3. for the ``default`` alias only: the ``CHANNEL_LAYER_URL`` setting, then the
   ``CHANNEL_LAYER_URL`` environment variable (what ``interfaceserver`` and
   ``runworker`` read), then ``asgi_spec.DEFAULT_LAYER_URL``.

``CONFIG`` holds layer options (``expiry``, ``capacity`` ...); with a URL they
win over the URL's query parameters. Without ``CHANNEL_LAYERS`` at all, the
``default`` alias is read from ``CHANNEL_LAYER_URL`` and ``CHANNEL_ROUTING``.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed

from asgi_spec import DEFAULT_LAYER_URL, LayerConfigError, layer_from_url
from asgi_spec.layers.memory import MemoryChannelLayer
from asgi_spec.options import check_options, split_options
from asgi_spec.urls import BACKENDS

DEFAULT_ALIAS = "default"
URL_SETTING = "CHANNEL_LAYER_URL"
URL_ENVVAR = "CHANNEL_LAYER_URL"
_PASSWORD = re.compile(r"(://[^:/@,]*):[^@/,]*@")
_KNOWN_KEYS = frozenset({"BACKEND", "URL", "CONFIG", "ROUTING", "TEST_CONFIG"})


class InvalidChannelLayerError(ImproperlyConfigured):
    """``CHANNEL_LAYERS`` (or the URL shortcut) cannot give a working layer."""


@dataclass(frozen=True)
class LayerSettings:
    """One alias's settings, normalised: a URL or a class, options and a routing path."""

    alias: str
    url: str | None
    backend_class: type | None
    options: dict[str, Any] = field(default_factory=dict)
    routing: Any = None
    source: str = ""  # where the layer choice came from, for messages

    @property
    def is_memory(self) -> bool:
        """``True`` if this layer lives inside one process (``memory://``)."""
        if self.url is not None:
            return self.url.split("://", 1)[0].lower() == "memory"
        return self.backend_class is not None and issubclass(self.backend_class,
                                                             MemoryChannelLayer)

    def describe(self) -> str:
        if self.url is not None:
            return redact(self.url)
        assert self.backend_class is not None
        return f"{self.backend_class.__module__}.{self.backend_class.__qualname__}"

    def build(self) -> Any:
        """A new layer object (no connection is checked)."""
        try:
            if self.url is not None:
                return layer_from_url(self.url, **self.options)
            assert self.backend_class is not None
            return self.backend_class(**self.options)
        except LayerConfigError as exc:
            raise InvalidChannelLayerError(
                f"CHANNEL_LAYERS[{self.alias!r}]: {exc}") from None
        except TypeError as exc:
            raise InvalidChannelLayerError(
                f"CHANNEL_LAYERS[{self.alias!r}]: CONFIG does not fit "
                f"{self.describe()}: {exc}") from None


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***``."""
    return _PASSWORD.sub(r"\1:***@", url)


def configured_aliases() -> list[str]:
    """The aliases in ``CHANNEL_LAYERS`` (``["default"]`` when it is absent)."""
    layers = getattr(settings, "CHANNEL_LAYERS", None)
    if layers is None:
        return [DEFAULT_ALIAS]
    if not isinstance(layers, dict):
        raise InvalidChannelLayerError(
            f"CHANNEL_LAYERS must be a dict of alias -> settings, got {type(layers).__name__}")
    return list(layers)


def _alias_config(alias: str) -> dict[str, Any]:
    layers = getattr(settings, "CHANNEL_LAYERS", None)
    if layers is None:
        if alias != DEFAULT_ALIAS:
            raise InvalidChannelLayerError(
                f"no channel layer alias {alias!r}: CHANNEL_LAYERS is not set")
        routing = getattr(settings, "CHANNEL_ROUTING", None)
        return {} if routing is None else {"ROUTING": routing}
    if not isinstance(layers, dict):
        raise InvalidChannelLayerError(
            f"CHANNEL_LAYERS must be a dict of alias -> settings, got {type(layers).__name__}")
    if alias not in layers:
        raise InvalidChannelLayerError(
            f"no channel layer alias {alias!r} in CHANNEL_LAYERS (known: {', '.join(layers)})")
    config = layers[alias]
    if not isinstance(config, dict):
        raise InvalidChannelLayerError(
            f"CHANNEL_LAYERS[{alias!r}] must be a dict with BACKEND/URL, CONFIG and ROUTING, "
            f"got {type(config).__name__}")
    unknown = sorted(set(config) - _KNOWN_KEYS)
    if unknown:
        raise InvalidChannelLayerError(
            f"CHANNEL_LAYERS[{alias!r}] has unknown key(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(_KNOWN_KEYS))}")
    return config


def _import_backend(path: str, alias: str) -> type:
    if ":" in path:
        module_name, _, attr = path.partition(":")
    else:
        module_name, _, attr = path.rpartition(".")
    hint = (f"; a layer URL also works as BACKEND, e.g. 'sqlite:///layer.db' "
            f"(schemes: {', '.join(BACKENDS)})")
    if not module_name or not attr:
        raise InvalidChannelLayerError(
            f"CHANNEL_LAYERS[{alias!r}]['BACKEND'] = {path!r} is neither a layer URL nor a "
            f"class path (package.module.Class){hint}")
    try:
        module = importlib.import_module(module_name)
        backend = getattr(module, attr)
    except ImportError as exc:
        raise InvalidChannelLayerError(
            f"CHANNEL_LAYERS[{alias!r}]: unknown backend {path!r}: cannot import "
            f"{module_name!r} ({exc}){hint}") from None
    except AttributeError:
        raise InvalidChannelLayerError(
            f"CHANNEL_LAYERS[{alias!r}]: unknown backend {path!r}: module {module_name!r} "
            f"has no {attr!r}{hint}") from None
    if not (isinstance(backend, type) and hasattr(backend, "send")
            and hasattr(backend, "receive")):
        raise InvalidChannelLayerError(
            f"CHANNEL_LAYERS[{alias!r}]: backend {path!r} is not a channel layer class "
            "(it needs send and receive)")
    return backend


def _check_url(url: Any, alias: str, key: str) -> str:
    if not isinstance(url, str) or "://" not in url:
        raise InvalidChannelLayerError(
            f"CHANNEL_LAYERS[{alias!r}][{key!r}] must be a layer URL such as "
            f"'sqlite:///layer.db', got {url!r}")
    scheme = url.split("://", 1)[0].lower()
    if scheme not in BACKENDS:
        raise InvalidChannelLayerError(
            f"CHANNEL_LAYERS[{alias!r}]: unknown backend scheme {scheme!r} in "
            f"{redact(url)!r}; known: {', '.join(BACKENDS)}")
    return url


def layer_settings(alias: str = DEFAULT_ALIAS, *, test: bool = False) -> LayerSettings:
    """The normalised settings of ``alias``; ``InvalidChannelLayerError`` if they are wrong.

    ``test=True`` merges ``TEST_CONFIG`` over ``CONFIG``.
    """
    config = _alias_config(alias)
    options = config.get("CONFIG") or {}
    if not isinstance(options, dict):
        raise InvalidChannelLayerError(
            f"CHANNEL_LAYERS[{alias!r}]['CONFIG'] must be a dict of layer options, "
            f"got {type(options).__name__}")
    if test and config.get("TEST_CONFIG"):
        options = {**options, **config["TEST_CONFIG"]}
    routing = config.get("ROUTING")
    backend = config.get("BACKEND")
    url = config.get("URL")
    if url is not None and backend is not None:
        raise InvalidChannelLayerError(
            f"CHANNEL_LAYERS[{alias!r}] has both URL and BACKEND; give one")
    if url is not None:
        return _from_url(alias, _check_url(url, alias, "URL"), options, routing, "URL")
    if backend is not None:
        if not isinstance(backend, str) or not backend:
            raise InvalidChannelLayerError(
                f"CHANNEL_LAYERS[{alias!r}]['BACKEND'] must be a URL or a class path, "
                f"got {backend!r}")
        if "://" in backend:
            return _from_url(alias, _check_url(backend, alias, "BACKEND"), options, routing,
                             "BACKEND")
        cls = _import_backend(backend, alias)
        _check_options(alias, cls, options)
        return LayerSettings(alias, None, cls, dict(options), routing, "BACKEND")
    if alias != DEFAULT_ALIAS:
        raise InvalidChannelLayerError(
            f"CHANNEL_LAYERS[{alias!r}] needs a BACKEND or a URL "
            f"(only the {DEFAULT_ALIAS!r} alias falls back to {URL_SETTING})")
    shortcut = getattr(settings, URL_SETTING, None)
    source = f"settings.{URL_SETTING}"
    if not shortcut:
        shortcut, source = os.environ.get(URL_ENVVAR), f"${URL_ENVVAR}"
    if not shortcut:
        shortcut, source = DEFAULT_LAYER_URL, "the default"
    return _from_url(alias, _check_url(shortcut, alias, source), options, routing, source)


def _from_url(alias: str, url: str, options: dict[str, Any], routing: Any,
              source: str) -> LayerSettings:
    cls = _import_backend(BACKENDS[url.split("://", 1)[0].lower()], alias)
    _check_options(alias, cls, {**split_options(url)[1], **options})
    return LayerSettings(alias, url, None, dict(options), routing, source)


def _check_options(alias: str, cls: type, options: dict[str, Any]) -> None:
    try:
        check_options(cls, options)
    except LayerConfigError as exc:
        raise InvalidChannelLayerError(f"CHANNEL_LAYERS[{alias!r}]['CONFIG']: {exc}") from None


class ChannelLayerWrapper:
    """A layer plus its ``router`` and ``alias``; every other attribute is the layer's."""

    def __init__(self, layer: Any, alias: str, routing: Any) -> None:
        self.layer = layer
        self.alias = alias
        self.routing = routing
        self._router: Any = None

    @property
    def channel_layer(self) -> Any:
        return self.layer

    @property
    def router(self) -> Any:
        """The ``worker.django.routing.DjangoRouter`` of this alias's ``ROUTING``."""
        if self._router is None:
            from worker.django.routing import DjangoRouter

            if self.routing is None:
                raise InvalidChannelLayerError(
                    f"CHANNEL_LAYERS[{self.alias!r}] has no ROUTING: set it to the import "
                    "path of your routing, e.g. 'myproject.routing.channel_routing'")
            self._router = DjangoRouter(self.routing)
        return self._router

    @router.setter
    def router(self, value: Any) -> None:
        self._router = value

    def __getattr__(self, name: str) -> Any:
        return getattr(self.layer, name)

    def __repr__(self) -> str:
        return f"<ChannelLayerWrapper {self.alias!r} {self.layer!r}>"


_lock = threading.RLock()
_wrappers: dict[str, ChannelLayerWrapper] = {}


def get_channel_layer(alias: str = DEFAULT_ALIAS) -> ChannelLayerWrapper:
    """The (cached) layer of ``alias``, with ``.router`` and ``.alias``."""
    wrapper = _wrappers.get(alias)
    if wrapper is not None:
        return wrapper
    with _lock:
        wrapper = _wrappers.get(alias)
        if wrapper is None:
            found = layer_settings(alias)
            wrapper = ChannelLayerWrapper(found.build(), alias, found.routing)
            _wrappers[alias] = wrapper
        return wrapper


def reset_layers(close: bool = True) -> None:
    """Forget the cached layers (closing them): the next ``get_channel_layer`` rebuilds."""
    with _lock:
        old = list(_wrappers.values())
        _wrappers.clear()
    if close:
        for wrapper in old:
            with contextlib.suppress(Exception):  # closing is best effort
                wrapper.layer.close()


@contextmanager
def swap_layers(layers: dict[str, ChannelLayerWrapper]) -> Iterator[None]:
    """Use ``layers`` (alias -> wrapper) instead of the configured ones for a while."""
    with _lock:
        saved = dict(_wrappers)
        _wrappers.update(layers)
    try:
        yield
    finally:
        with _lock:
            _wrappers.clear()
            _wrappers.update(saved)


def _settings_changed(*, setting: str, **kwargs: Any) -> None:
    if setting in ("CHANNEL_LAYERS", URL_SETTING, "CHANNEL_ROUTING"):
        reset_layers()


setting_changed.connect(_settings_changed)


class _LayerFactories:
    """``worker.django.layers:raw.<alias>``: the bare layer of an alias, for import paths.

    ``runworker`` (the console script and ``manage.py runworker``) takes a
    layer as ``module:attr``; this object lets it name a configured alias,
    setting Django up first when the process has not (a supervised child).
    """

    def __getattr__(self, alias: str) -> Any:
        if alias.startswith("__"):
            raise AttributeError(alias)
        ensure_django()
        return get_channel_layer(alias).layer


raw = _LayerFactories()


def ensure_django() -> None:
    """Call ``django.setup()`` unless the apps are already loaded."""
    from django.apps import apps

    if not apps.ready:
        import django

        django.setup()
