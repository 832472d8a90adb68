"""Tests for ``interface_server.config``: ``ServerConfig`` validation."""

from __future__ import annotations

import pytest

from interface_server.config import ServerConfig


def test_defaults_are_valid() -> None:
    """The defaults make a valid config with a backlog sized for bursts."""
    config = ServerConfig()
    assert config.backlog >= 1024
    assert config.trusted_proxies.trusts("127.0.0.1")
    assert not config.trusted_proxies.trusts("10.0.0.1")


@pytest.mark.parametrize(("field", "value"), [
    ("http_timeout", 0), ("http_timeout", -1), ("ping_timeout", True),
    ("body_chunk_size", 0), ("max_headers", 1.5), ("max_body_size", -1),
    ("limit_concurrency", -5), ("graceful_timeout", -1), ("root_path", "app"),
    ("root_path", "/app/"), ("forwarded_allow_ips", "nonsense"),
    ("access_log_format", "{bogus}"),
])
def test_invalid_values_name_the_field(field: str, value: object) -> None:
    """A bad value is a ValueError naming the field (or the bad entry)."""
    with pytest.raises(ValueError):
        ServerConfig(**{field: value})


def test_replace_validates() -> None:
    """``replace`` returns a validated copy."""
    config = ServerConfig().replace(http_timeout=5.0)
    assert config.http_timeout == 5.0
    with pytest.raises(ValueError, match="http_timeout"):
        config.replace(http_timeout=0)


def test_optional_limits_may_be_none() -> None:
    """No body limit and no concurrency limit are allowed."""
    config = ServerConfig(max_body_size=None, limit_concurrency=None)
    assert config.max_body_size is None
