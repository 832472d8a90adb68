"""System checks: a wrong ``CHANNEL_LAYERS`` fails ``manage.py check`` with a clear message.

* ``switchboard.E001`` -- an alias's settings are wrong (unknown backend or
  scheme, bad ``CONFIG`` option, not a dict ...): the message names the key.
* ``switchboard.E002`` -- an alias has no ``ROUTING``.
* ``switchboard.E003`` -- the ``ROUTING`` cannot be imported or is not a routing.
* ``switchboard.E004`` (``check --deploy``, and always before ``runworker``) --
  the layer is ``memory://``, which lives inside one process: interface
  servers and other workers cannot reach it.
* ``switchboard.W001`` -- ``django.contrib.staticfiles`` comes before
  ``worker.django`` in ``INSTALLED_APPS``, so ``runserver`` is Django's
  WSGI server, not the one-process Switchboard server.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core import checks

from worker.django.layers import InvalidChannelLayerError, configured_aliases, layer_settings
from worker.exceptions import RouteError

TAG = "switchboard"


def _aliases() -> tuple[list[str], list[checks.CheckMessage]]:
    try:
        return configured_aliases(), []
    except InvalidChannelLayerError as exc:
        return [], [checks.Error(str(exc), id="switchboard.E001")]


def check_channel_layers(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """E001-E003: every alias gives a layer and a loadable routing."""
    aliases, errors = _aliases()
    for alias in aliases:
        try:
            found = layer_settings(alias)
        except InvalidChannelLayerError as exc:
            errors.append(checks.Error(str(exc), id="switchboard.E001"))
            continue
        if found.routing is None:
            errors.append(checks.Error(
                f"CHANNEL_LAYERS[{alias!r}] has no ROUTING",
                hint="Set 'ROUTING' to the import path of your routing list, e.g. "
                     "'myproject.routing.channel_routing' (an empty list serves only Django "
                     "views).",
                id="switchboard.E002"))
            continue
        from worker.django.routing import DjangoRouter

        try:
            DjangoRouter(found.routing)
        except RouteError as exc:
            errors.append(checks.Error(
                f"CHANNEL_LAYERS[{alias!r}]['ROUTING'] = {found.routing!r} is not usable: {exc}",
                id="switchboard.E003"))
    return errors


def check_layers_are_shared(app_configs: Any = None,
                            **kwargs: Any) -> list[checks.CheckMessage]:
    """E004: no alias uses the one-process memory layer (run by ``runworker``)."""
    aliases, errors = _aliases()
    for alias in aliases:
        try:
            found = layer_settings(alias)
        except InvalidChannelLayerError:
            continue  # reported by E001
        if found.is_memory:
            errors.append(checks.Error(
                f"CHANNEL_LAYERS[{alias!r}] uses the in-memory layer ({found.describe()}), "
                "which lives inside one process: an interface server or another worker "
                "cannot reach it",
                hint="Use 'sqlite:///path/layer.db' (one machine) or 'redis://host:6379/0'; "
                     "memory:// is for tests and 'manage.py runserver' only.",
                id="switchboard.E004"))
    return errors


def check_app_order(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """W001: ``worker.django`` must come before staticfiles to own ``runserver``."""
    apps = list(settings.INSTALLED_APPS)
    ours = next((i for i, a in enumerate(apps) if a.split(".apps.")[0] == "worker.django"), None)
    static = next((i for i, a in enumerate(apps)
                   if a.split(".apps.")[0] == "django.contrib.staticfiles"), None)
    if ours is not None and static is not None and static < ours:
        return [checks.Warning(
            "'django.contrib.staticfiles' comes before 'worker.django' in INSTALLED_APPS, so "
            "'manage.py runserver' is Django's WSGI server, not Switchboard's",
            hint="Move 'worker.django' above 'django.contrib.staticfiles'.",
            id="switchboard.W001")]
    return []


def register_all() -> None:
    checks.register(check_channel_layers, TAG)
    checks.register(check_app_order, TAG)
    checks.register(check_layers_are_shared, TAG, deploy=True)
