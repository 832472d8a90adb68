"""Shared pytest fixtures: private ``redis-server`` processes for the Redis layer tests.

Each fixture starts its own server on a free port (see ``tests/redis_server.py``)
and stops it by PID at the end of the session. When ``redis-server`` cannot
start, the test FAILS with the reason; it is never skipped.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.redis_server import RedisServer, RedisServerError


def _start(server: RedisServer) -> RedisServer:
    try:
        return server.start()
    except RedisServerError as exc:
        server.cleanup()
        pytest.fail(f"cannot start redis-server for the Redis layer tests: {exc}",
                    pytrace=False)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One private redis-server for the whole session."""
    server = _start(RedisServer())
    yield server
    server.cleanup()


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisServer) -> str:
    """``redis://127.0.0.1:<port>/0`` of the session's private server."""
    return redis_server.url


@pytest.fixture(scope="session")
def redis_shard_servers() -> Iterator[list[RedisServer]]:
    """Two more private redis-servers, for sharding tests."""
    servers: list[RedisServer] = []
    try:
        for _ in range(2):
            servers.append(_start(RedisServer()))
        yield servers
    finally:
        for server in servers:
            server.cleanup()


@pytest.fixture(scope="session")
def redis_shard_urls(redis_shard_servers: list[RedisServer]) -> list[str]:
    """The URLs of the two shard servers."""
    return [server.url for server in redis_shard_servers]
