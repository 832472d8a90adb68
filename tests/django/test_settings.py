"""Priority 1: the app, ``CHANNEL_LAYERS`` in the 1.x shape, the URL shortcut and the checks."""

from __future__ import annotations

import pytest
from django.core import checks
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

from asgi_spec.layers.memory import MemoryChannelLayer
from asgi_spec.layers.sqlite import SQLiteChannelLayer
from worker.django import get_channel_layer
from worker.django.checks import (
    check_app_order,
    check_channel_layers,
    check_layers_are_shared,
)
from worker.django.layers import (
    InvalidChannelLayerError,
    layer_settings,
    redact,
    reset_layers,
)
from worker.django.routing import DjangoRouter

ROUTING = "tests.django.project.routing.channel_routing"


def ids(messages):
    return [m.id for m in messages]


def test_app_is_installed_under_its_label():
    """``worker.django`` in INSTALLED_APPS is an app labelled ``switchboard``."""
    from django.apps import apps

    config = apps.get_app_config("switchboard")
    assert config.name == "worker.django"


def test_get_channel_layer_returns_the_layer_with_router_and_alias():
    """get_channel_layer() gives the configured layer, its alias and a DjangoRouter whose
    channels include the routing's and http.request."""
    layer = get_channel_layer()
    assert isinstance(layer.layer, MemoryChannelLayer)
    assert layer.alias == "default"
    assert isinstance(layer.router, DjangoRouter)
    assert {"http.request", "websocket.connect"} <= layer.router.channels
    assert get_channel_layer() is layer  # cached


def test_the_wrapper_forwards_the_layer_api():
    """The wrapper sends and receives through the layer it wraps."""
    layer = get_channel_layer()
    layer.send("test.channel", {"value": 1})
    assert layer.receive(["test.channel"]) == ("test.channel", {"value": 1})
    assert layer.extensions == layer.layer.extensions


@pytest.mark.parametrize("config, url_or_class", [
    ({"BACKEND": "sqlite:///{tmp}/a.db"}, SQLiteChannelLayer),
    ({"URL": "sqlite:///{tmp}/b.db", "CONFIG": {"expiry": 5}}, SQLiteChannelLayer),
    ({"BACKEND": "asgi_spec.layers.memory.MemoryChannelLayer", "CONFIG": {"capacity": 7}},
     MemoryChannelLayer),
    ({"BACKEND": "asgi_spec.layers.memory:MemoryChannelLayer"}, MemoryChannelLayer),
])
def test_backend_may_be_a_url_or_a_class_path(tmp_path, config, url_or_class):
    """BACKEND is a layer URL or a class path (dotted or module:Class); URL is the same as a
    URL BACKEND; CONFIG options reach the layer."""
    config = {k: v.format(tmp=tmp_path) if isinstance(v, str) else v for k, v in config.items()}
    with override_settings(CHANNEL_LAYERS={"default": {**config, "ROUTING": ROUTING}}):
        layer = get_channel_layer()
        try:
            assert isinstance(layer.layer, url_or_class)
            for key, value in config.get("CONFIG", {}).items():
                assert getattr(layer.layer, key) == value
        finally:
            reset_layers()


def test_url_shortcut_setting_then_environment_then_default(tmp_path, monkeypatch):
    """Without BACKEND/URL the default alias uses the CHANNEL_LAYER_URL setting, else the
    CHANNEL_LAYER_URL environment variable, else the embedded SQLite default."""
    layers = {"default": {"ROUTING": ROUTING}}
    with override_settings(CHANNEL_LAYERS=layers, CHANNEL_LAYER_URL="memory://?capacity=3"):
        found = layer_settings()
        assert (found.url, found.source) == ("memory://?capacity=3",
                                             "settings.CHANNEL_LAYER_URL")
    monkeypatch.setenv("CHANNEL_LAYER_URL", f"sqlite:///{tmp_path}/env.db")
    with override_settings(CHANNEL_LAYERS=layers, CHANNEL_LAYER_URL=None):
        found = layer_settings()
        assert found.url == f"sqlite:///{tmp_path}/env.db"
        assert found.source == "$CHANNEL_LAYER_URL"
    monkeypatch.delenv("CHANNEL_LAYER_URL")
    with override_settings(CHANNEL_LAYERS=layers, CHANNEL_LAYER_URL=None):
        assert layer_settings().url == "sqlite:///.switchboard/layer.db"


def test_no_channel_layers_setting_reads_the_shortcut_and_channel_routing():
    """With no CHANNEL_LAYERS at all, CHANNEL_LAYER_URL and CHANNEL_ROUTING configure the
    default alias."""
    with override_settings(CHANNEL_LAYERS=None, CHANNEL_LAYER_URL="memory://",
                           CHANNEL_ROUTING=ROUTING):
        from django.conf import settings

        del settings.CHANNEL_LAYERS
        found = layer_settings()
        assert (found.url, found.routing) == ("memory://", ROUTING)


@pytest.mark.parametrize("config, expected", [
    ({"BACKEND": "asgiref.inmemory.ChannelLayer"}, "unknown backend 'asgiref.inmemory"),
    ({"BACKEND": "nosuch://x"}, "unknown backend scheme 'nosuch'"),
    ({"BACKEND": "memory://", "CONFIG": {"capacty": 3}}, "unknown layer option(s) capacty"),
    ({"BACKEND": "memory://", "URL": "memory://"}, "both URL and BACKEND"),
    ({"BACKEND": "memory://", "CONFIG": 3}, "'CONFIG'] must be a dict"),
    ({"BACKEND": "memory://", "ROUTE": "x"}, "unknown key(s) ROUTE"),
    ({"BACKEND": "os.path.join"}, "is not a channel layer class"),
])
def test_bad_settings_raise_errors_naming_the_setting(config, expected):
    """Each kind of wrong CHANNEL_LAYERS raises InvalidChannelLayerError naming the key."""
    with override_settings(CHANNEL_LAYERS={"default": {**config, "ROUTING": ROUTING}}), \
            pytest.raises(InvalidChannelLayerError) as info:
        layer_settings()
    assert expected in str(info.value)
    assert "CHANNEL_LAYERS['default']" in str(info.value)


def test_passwords_are_redacted_from_layer_urls():
    """A password in a layer URL never appears in a message."""
    assert redact("redis://:secret@host:6379/0") == "redis://:***@host:6379/0"
    assert redact("redis://u:pw@a:1/0,redis://u:pw2@b:2/0") == "redis://u:***@a:1/0,redis://u:***@b:2/0"


def test_checks_pass_for_the_test_project():
    """The test project's settings pass the checks (apart from the deploy-only E004)."""
    assert check_channel_layers() == []
    assert check_app_order() == []


def test_check_reports_a_missing_routing():
    """An alias without ROUTING fails `manage.py check` with switchboard.E002."""
    with override_settings(CHANNEL_LAYERS={"default": {"BACKEND": "memory://"}}):
        errors = check_channel_layers()
        assert ids(errors) == ["switchboard.E002"]
        assert "has no ROUTING" in errors[0].msg
        with pytest.raises(SystemCheckError, match=r"switchboard\.E002"):
            call_command("check")


def test_check_reports_an_unknown_backend():
    """An unknown BACKEND is switchboard.E001, with the backend in the message."""
    with override_settings(CHANNEL_LAYERS={"default": {"BACKEND": "no.such.Layer",
                                                       "ROUTING": ROUTING}}):
        errors = check_channel_layers()
    assert ids(errors) == ["switchboard.E001"]
    assert "no.such.Layer" in errors[0].msg


def test_check_reports_an_unimportable_routing():
    """A ROUTING that cannot be imported is switchboard.E003, naming the module."""
    with override_settings(CHANNEL_LAYERS={"default": {"BACKEND": "memory://",
                                                       "ROUTING": "no_such_module.routing"}}):
        errors = check_channel_layers()
    assert ids(errors) == ["switchboard.E003"]
    assert "no_such_module" in errors[0].msg


def test_deploy_check_refuses_the_memory_layer(tmp_path):
    """The in-memory layer fails `check --deploy` (switchboard.E004): it cannot span
    processes; a SQLite layer passes."""
    errors = check_layers_are_shared()
    assert ids(errors) == ["switchboard.E004"]
    assert "inside one process" in errors[0].msg
    assert "switchboard.E004" in ids(checks.run_checks(include_deployment_checks=True))
    with override_settings(CHANNEL_LAYERS={"default": {"BACKEND": f"sqlite:///{tmp_path}/l.db",
                                                       "ROUTING": ROUTING}}):
        assert check_layers_are_shared() == []


def test_check_warns_when_staticfiles_comes_first():
    """staticfiles before worker.django means runserver is not ours: switchboard.W001."""
    with override_settings(INSTALLED_APPS=["django.contrib.staticfiles", "worker.django"]):
        assert ids(check_app_order()) == ["switchboard.W001"]


def test_routing_without_http_request_falls_back_to_views():
    """The Django router sends an http.request that no project route takes to the views."""
    from worker.django.handler import view_consumer

    router = DjangoRouter([])
    consumer, kwargs = router.match_content("http.request", {"path": "/anything/"})
    assert consumer.__wrapped__ is view_consumer and kwargs == {}


def test_consumers_are_wrapped_with_the_database_signals():
    """Every consumer the router returns sends consumer_started and consumer_finished (which
    the app connects to close_old_connections), even when it raises."""
    from django.db import close_old_connections

    from worker.django import signals
    from worker.routing import route

    seen = []

    def consumer(message):
        seen.append("ran")
        raise RuntimeError("boom")

    def started(sender, message, **kwargs):
        seen.append("started")

    def finished(sender, message, **kwargs):
        seen.append("finished")

    signals.consumer_started.connect(started)
    signals.consumer_finished.connect(finished)
    try:
        wrapped, _ = DjangoRouter([route("x.y", consumer)]).match_content("x.y", {})
        with pytest.raises(RuntimeError):
            wrapped({})
    finally:
        signals.consumer_started.disconnect(started)
        signals.consumer_finished.disconnect(finished)
    assert seen == ["started", "ran", "finished"]
    receivers = [r[1]() for r in signals.consumer_finished.receivers]
    assert close_old_connections in receivers


def test_a_worker_closes_old_database_connections_after_each_message():
    """Database hygiene as between requests: with CONN_MAX_AGE = 0 (the default), the
    connection a consumer used is closed once the worker has run it, so the next message
    starts on a fresh one."""
    from django.contrib.auth.models import User
    from django.db import connection

    from worker.django.testing import apply_routes
    from worker.routing import route
    from worker.worker import Worker

    seen = []

    def consumer(message):
        User.objects.exists()
        seen.append(connection.connection is not None)

    with apply_routes([route("hygiene.test", consumer)]):
        wrapper = get_channel_layer()
        worker = Worker(wrapper.layer, wrapper.router, name="hygiene")
        wrapper.send("hygiene.test", {})
        assert worker.run_once(block=False)
    assert seen == [True]
    assert connection.connection is None
