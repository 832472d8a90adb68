"""Django integration for the Switchboard worker: the only place Django is imported.

Add the app (before ``django.contrib.staticfiles``, whose ``runserver`` it
replaces) and describe the layer in the Channels 1.x shape::

    INSTALLED_APPS = ["worker.django", ..., "django.contrib.staticfiles"]
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "sqlite:///.switchboard/layer.db",  # a URL or a class path
            "CONFIG": {"expiry": 60},                      # layer options
            "ROUTING": "myproject.routing.channel_routing",
        },
    }

Then ``manage.py runworker`` consumes the routed channels (``http.request``
goes to the project's Django views unless the routing says otherwise) and
``manage.py runserver`` runs everything in one process for development.

Modules: ``layers`` (settings, ``get_channel_layer``), ``checks`` (system
checks), ``handler`` (the ``http.request`` -> view -> ``http.response``
bridge), ``sessions`` and ``auth`` (consumer decorators), ``ordering``
(``enforce_ordering``, whose tables are in ``models``), ``consumers``
(generic consumers with session/auth flags), ``routing`` (the Django router),
``binding`` (model data binding), ``testing`` (test tools; ``live`` runs the
processes of ``ChannelLiveServerTestCase``) and ``management.commands``
(``runworker``, ``runserver``, ``channels_status``). Only
``management/commands/runserver.py`` imports ``interface_server``, because the
development server runs both halves in one process (``live`` starts it as a
subprocess).
"""

from __future__ import annotations

from typing import Any

__all__ = ["get_channel_layer"]


def get_channel_layer(alias: str = "default") -> Any:
    """The layer configured as ``CHANNEL_LAYERS[alias]``, with ``.router`` and ``.alias``."""
    from worker.django.layers import get_channel_layer as _get

    return _get(alias)
