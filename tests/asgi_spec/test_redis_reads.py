"""``_aread``: one reply on an asyncio connection without redis-py's layers, with
redis-py's outcomes (each checked against a real ``redis-server``)."""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any

import pytest
import redis.asyncio
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from asgi_spec.layers.redis.connections import _aread, _asend, _pack


def run(url: str, scenario: Any, **kwargs: Any) -> Any:
    async def main() -> Any:
        pool = redis.asyncio.ConnectionPool.from_url(url, **kwargs)
        conn = pool.make_connection()
        await conn.connect()
        try:
            return await scenario(conn)
        finally:
            await conn.disconnect()

    return asyncio.run(main())


def test_replies_errors_and_pipelined_replies(redis_url: str) -> None:
    """Values come back as read_response gives them; an error reply raises its
    ResponseError and leaves the connection usable; replies pipelined in one
    write are read one by one from the same buffer."""
    async def scenario(conn: Any) -> Any:
        await _asend(conn, _pack("SET", "sb:aread", "v"))
        assert await _aread(conn) == b"OK"
        await _asend(conn, _pack("INCR", "sb:aread"))
        with pytest.raises(ResponseError, match="not an integer"):
            await _aread(conn)
        assert conn.is_connected
        await _asend(conn, [_pack("GET", "sb:aread")[0] + _pack("ECHO", "x" * 100_000)[0]
                            + _pack("DEL", "sb:aread")[0]])
        return [await _aread(conn) for _ in range(3)]

    assert run(redis_url, scenario) == [b"v", b"x" * 100_000, 1]


def test_a_closed_connection_raises_connection_error_and_is_dropped(redis_url: str) -> None:
    """The server closing the socket mid-wait: ConnectionError, connection dropped."""
    async def scenario(conn: Any) -> Any:
        await _asend(conn, _pack("CLIENT", "ID"))
        own_id = await _aread(conn)
        await _asend(conn, _pack("BLPOP", "sb:aread:never", 5))
        killer = redis.asyncio.Redis.from_url(redis_url)
        await asyncio.sleep(0.05)
        await killer.client_kill_filter(_id=own_id)
        await killer.aclose()
        with pytest.raises(RedisConnectionError):
            await _aread(conn)
        return conn.is_connected

    assert run(redis_url, scenario) is False


def test_a_silent_server_times_out_and_the_connection_is_dropped() -> None:
    """No reply within socket_timeout: redis-py's TimeoutError, connection dropped."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    accepted: list[socket.socket] = []

    def accept_and_greet() -> None:  # answers the handshake, then never again
        sock, _ = listener.accept()
        accepted.append(sock)
        while data := sock.recv(65536):
            if b"PING" in data:
                return
            sock.sendall(b"+OK\r\n" * data.count(b"*"))  # one per command of the handshake

    thread = threading.Thread(target=accept_and_greet, daemon=True)
    thread.start()

    async def main() -> Any:
        pool = redis.asyncio.ConnectionPool.from_url(f"redis://127.0.0.1:{port}/0",
                                                     socket_timeout=0.2, protocol=2)
        conn = pool.make_connection()
        await conn.connect()
        await _asend(conn, _pack("PING"))
        with pytest.raises(RedisTimeoutError, match="Timeout reading"):
            await _aread(conn)
        return conn.is_connected

    try:
        assert asyncio.run(main()) is False
    finally:
        thread.join(5)
        for sock in accepted:
            sock.close()
        listener.close()


@pytest.mark.parametrize("protocol", [2, 3])
def test_both_protocols_are_read_here_and_pushes_passed_over(redis_url: str,
                                                             protocol: int) -> None:
    """RESP2 and RESP3 connections are read without read_response; a RESP3 push that
    comes before a reply (here: client tracking's invalidation) is passed over."""
    async def scenario(conn: Any) -> Any:
        async def refuse(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError("read_response used")

        conn.read_response = refuse
        await _asend(conn, _pack("SET", "sb:aread:t", "1"))
        assert await _aread(conn) == b"OK"
        if protocol == 3:
            await _asend(conn, _pack("CLIENT", "TRACKING", "ON"))
            assert await _aread(conn) == b"OK"
            await _asend(conn, _pack("GET", "sb:aread:t"))  # now tracked
            assert await _aread(conn) == b"1"
            await _asend(conn, _pack("SET", "sb:aread:t", "2"))  # invalidation push, then OK
        else:
            await _asend(conn, _pack("SET", "sb:aread:t", "2"))
        assert await _aread(conn) == b"OK"
        await _asend(conn, _pack("DEL", "sb:aread:t"))
        return await _aread(conn)

    assert run(redis_url, scenario, protocol=protocol) == 1
