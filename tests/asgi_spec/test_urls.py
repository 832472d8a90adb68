"""Choosing and configuring layers by URL or import path."""

from __future__ import annotations

import re

import pytest

from asgi_spec import LayerConfigError, layer_from_url, load_layer
from asgi_spec.capacity import CapacityRules
from asgi_spec.layers.memory import MemoryChannelLayer
from asgi_spec.options import parse_option

#: An importable layer object, for ``load_layer("module:attr")``.
module_layer = MemoryChannelLayer(capacity=3)


def test_memory_url_with_options():
    """Query parameters become typed options; keyword arguments win over them."""
    layer = layer_from_url("memory://?expiry=5&capacity=7", capacity=9)
    assert isinstance(layer, MemoryChannelLayer)
    assert (layer.expiry, layer.capacity) == (5, 9)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://x", "unknown layer scheme 'mysql'"),
        ("no-scheme", "scheme://"),
        ("memory://?bogus=1", "unknown layer option.*bogus"),
        ("memory://?capacity=0", "capacity"),
        ("memory://?expiry=soon", "expiry"),
    ],
)
def test_bad_urls_are_clear_errors(url, message):
    """Unknown schemes, unknown options and bad values raise ``LayerConfigError``."""
    with pytest.raises(LayerConfigError, match=message):
        layer_from_url(url)


def test_load_layer_by_import_path():
    """``module:attr`` names a layer object built in user code."""
    assert load_layer(f"{__name__}:module_layer") is module_layer


def test_load_layer_instantiates_a_class_or_factory():
    """A layer class or a factory function at ``module:attr`` is called to make the layer."""
    assert isinstance(load_layer("asgi_spec.layers.memory:MemoryChannelLayer"),
                      MemoryChannelLayer)
    assert isinstance(load_layer(f"{__name__}:make_layer"), MemoryChannelLayer)


def make_layer():
    return MemoryChannelLayer()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("tests.asgi_spec.test_urls:nothing_here", "no attribute"),
        ("no_such_module_xyz:layer", "cannot import"),
        ("tests.asgi_spec.test_urls:re", "not a channel layer"),
        ("plainword", "neither a URL"),
    ],
)
def test_load_layer_errors(spec, message):
    """A wrong import path says what is missing."""
    with pytest.raises(LayerConfigError, match=message):
        load_layer(spec)


@pytest.mark.parametrize(
    ("text", "value"),
    [("5", 5), ("1.5", 1.5), ("true", True), ("Off", False), ("abc", "abc")],
)
def test_option_values_are_typed(text, value):
    """Query strings spell ints, floats, booleans and strings."""
    assert parse_option(text) == value and type(parse_option(text)) is type(value)


def test_capacity_rules_validate():
    """Capacity rules need positive ints and glob or regex keys."""
    rules = CapacityRules(10, {"a.*": 2, re.compile("b+"): 3})
    looked_up = [rules.for_channel(name) for name in ("a.x", "bbb", "c")]
    assert looked_up == [2, 3, 10]
    with pytest.raises(LayerConfigError, match="positive"):
        CapacityRules(10, {"a": 0})
    with pytest.raises(LayerConfigError, match="glob"):
        CapacityRules(10, {5: 1})
