"""``_aread``: one reply on an asyncio connection without redis-py's layers, with
redis-py's outcomes (each checked against a real ``redis-server``)."""

from __future__ import annotations

import asyncio
import select
import socket
import threading
import time
from typing import Any

import pytest
import redis
import redis.asyncio
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from asgi_spec.layers.redis.connections import _aread, _asend, _astale, _pack, _read, _stale


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


# -- the blocking twin, _read -------------------------------------------------------

def sync_conn(url: str, **kwargs: Any) -> Any:
    conn = redis.ConnectionPool.from_url(url, **kwargs).make_connection()
    conn.connect()
    return conn


def test_sync_replies_errors_pushes_and_pipelined_replies(redis_url: str) -> None:
    """``_read`` gives what read_response gives: values, a ResponseError raised with
    the connection kept, replies of one write one by one, a RESP3 push passed over."""
    from asgi_spec.layers.redis.connections import _read

    conn = sync_conn(redis_url, protocol=3)
    try:
        def refuse(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError("read_response used")

        conn.read_response = refuse
        conn.send_packed_command(_pack("SET", "sb:read", "v"))
        assert _read(conn) == b"OK"
        conn.send_packed_command(_pack("INCR", "sb:read"))
        with pytest.raises(ResponseError, match="not an integer"):
            _read(conn)
        conn.send_packed_command([_pack("CLIENT", "TRACKING", "ON")[0]
                                  + _pack("GET", "sb:read")[0]
                                  + _pack("ECHO", "x" * 100_000)[0]
                                  + _pack("SET", "sb:read", "w")[0]  # then a push
                                  + _pack("DEL", "sb:read")[0]])
        assert [_read(conn) for _ in range(5)] == [b"OK", b"v", b"x" * 100_000, b"OK", 1]
    finally:
        conn.disconnect()


def test_sync_closed_and_silent_connections(redis_url: str) -> None:
    """A killed connection: ConnectionError; a server that never answers: TimeoutError
    after socket_timeout; either way the connection is dropped."""
    from asgi_spec.layers.redis.connections import _read

    conn = sync_conn(redis_url)
    conn.send_packed_command(_pack("CLIENT", "ID"))
    own_id = _read(conn)
    conn.send_packed_command(_pack("BLPOP", "sb:read:never", 5))
    killer = redis.Redis.from_url(redis_url)
    killer.client_kill_filter(_id=own_id)
    killer.close()
    with pytest.raises(RedisConnectionError):
        _read(conn)
    assert conn._sock is None

    conn = sync_conn(redis_url, socket_timeout=0.2)
    conn.send_packed_command(_pack("BLPOP", "sb:read:never", 2))
    with pytest.raises(RedisTimeoutError, match="Timeout reading"):
        _read(conn)
    assert conn._sock is None


#: A ``PING``'s reply on the wire.
PONG = len(b"+PONG\r\n")


async def stream_holds(conn: Any, size: int) -> None:
    """Wait (5 s at most) until ``size`` bytes wait unread in the connection's stream,
    or it reached its end (``size`` 0: only the end)."""
    stream = conn._parser._stream
    for _ in range(500):
        if (size and len(stream._buffer) >= size) or stream.at_eof():
            return
        await asyncio.sleep(0.01)


def socket_holds(conn: Any, size: int) -> None:
    """Wait (5 s at most) until ``size`` bytes wait unread on the socket (peeked), or it
    reached its end (``size`` 0: only the end)."""
    sock = conn._sock
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if select.select([sock], [], [], 0.1)[0]:
            waiting = sock.recv(max(size, 1), socket.MSG_PEEK)
            if not waiting or (size and len(waiting) >= size):
                return
            time.sleep(0.01)


async def redis_py_says_stale(conn: Any) -> bool:
    """``can_read`` as the pool's staleness check reads it (an error means stale)."""
    try:
        return bool(await conn.can_read())
    except (RedisConnectionError, OSError):
        return True


def test_stale_check_agrees_with_can_read(redis_url: str) -> None:
    """``_astale`` says what redis-py's ``can_read`` says of a pooled connection: fit
    to reuse when idle and clean; not when a reply is left unread (in the stream or
    already in hiredis's reader) or when the server closed it."""
    async def scenario(conn: Any) -> list[tuple[bool | None, bool]]:
        seen = [(_astale(conn), await redis_py_says_stale(conn))]  # clean
        await _asend(conn, _pack("PING"))
        await stream_holds(conn, PONG)  # the reply waits in the stream, unread
        seen.append((_astale(conn), await redis_py_says_stale(conn)))
        assert await _aread(conn) == b"PONG"
        seen.append((_astale(conn), await redis_py_says_stale(conn)))  # clean again
        await _asend(conn, [_pack("PING")[0] * 2])
        await stream_holds(conn, 2 * PONG)
        assert await _aread(conn) == b"PONG"  # the second PONG now sits in the reader
        seen.append((_astale(conn), await redis_py_says_stale(conn)))
        assert await _aread(conn) == b"PONG"
        await _asend(conn, _pack("CLIENT", "ID"))
        own_id = await _aread(conn)
        killer = redis.asyncio.Redis.from_url(redis_url)
        await killer.client_kill_filter(_id=own_id)
        await killer.aclose()
        await stream_holds(conn, 0)
        seen.append((_astale(conn), await redis_py_says_stale(conn)))  # closed
        return seen

    assert run(redis_url, scenario) == [(False, False), (True, True), (False, False),
                                        (True, True), (True, True)]


def test_blocking_stale_check_agrees_with_can_read(redis_url: str) -> None:
    """``_stale`` says what redis-py's ``can_read`` says of a pooled blocking
    connection: clean when idle; not with a reply unread (on the socket, or in
    hiredis's reader) or after the server closed it."""
    pool = redis.ConnectionPool.from_url(redis_url, socket_timeout=5)
    conn = pool.make_connection()
    conn.connect()

    def redis_py() -> bool:
        try:
            return bool(conn.can_read())
        except (RedisConnectionError, OSError):
            return True

    seen = [(_stale(conn), redis_py())]  # clean
    conn.send_packed_command(_pack("PING"))
    socket_holds(conn, PONG)  # the reply waits on the socket, unread
    seen.append((_stale(conn), redis_py()))
    assert _read(conn) == b"PONG"
    seen.append((_stale(conn), redis_py()))  # clean again
    conn.send_packed_command([_pack("PING")[0] * 2])
    socket_holds(conn, 2 * PONG)
    assert _read(conn) == b"PONG"  # the second PONG now sits in hiredis's reader
    seen.append((_stale(conn), redis_py()))
    assert _read(conn) == b"PONG"
    conn.send_packed_command(_pack("CLIENT", "ID"))
    own_id = _read(conn)
    redis.Redis.from_url(redis_url).client_kill_filter(_id=own_id)
    socket_holds(conn, 0)
    seen.append((_stale(conn), redis_py()))  # closed by the server
    conn.disconnect()
    assert seen == [(False, False), (True, True), (False, False), (True, True), (True, True)]
