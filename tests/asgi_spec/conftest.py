"""Fixtures of the channel-layer tests: Redis layers on the session's private server."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from asgi_spec.exceptions import LayerUnavailable
from asgi_spec.layers.redis import RedisChannelLayer
from tests.redis_server import fresh_prefix


@pytest.fixture
def make(redis_url: str) -> Iterator[Callable[..., RedisChannelLayer]]:
    """``make(hosts=None, **options)``: a Redis layer on ``hosts`` (default: the session
    server) with a fresh key prefix unless ``prefix`` is given; each is flushed and
    closed after the test."""
    made: list[RedisChannelLayer] = []

    def build(hosts: Any = None, **options: Any) -> RedisChannelLayer:
        options.setdefault("prefix", fresh_prefix())
        layer = RedisChannelLayer(hosts=hosts or [redis_url], **options)
        made.append(layer)
        return layer

    yield build
    for layer in made:
        with contextlib.suppress(LayerUnavailable):
            layer.flush()
        layer.close()
