"""The layer's blocking I/O (redis-py sync): ``_SyncIO``, mixed into the layer.

Each method here does one kind of I/O and decides nothing that ``layer.py`` or
``receiving.py`` could decide without I/O; ``async_io.py`` holds the asyncio twin of
each, named with an ``a`` (``_call`` / ``_acall``). The steps of a receive
(``receiving.py``) name these methods.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
from redis.exceptions import ResponseError

from asgi_spec.exceptions import LayerUnavailable
from asgi_spec.layers.redis.connections import (
    _NETWORK_ERRORS,
    BLOCK_SOCKET_TIMEOUT,
    LOAD_LIBRARY,
    SCRIPT_ATTEMPTS,
    Popped,
    _missing_script,
    _pack,
    _read,
    _script_command,
    _seconds,
    _settle,
    _Shard,
)
from asgi_spec.layers.redis.scripts import SCRIPTS, Script


class _Race:
    """Shared state of one multi-server blocking wait (sync: threads)."""

    def __init__(self, shards: int) -> None:
        self.cond = threading.Condition()
        self.pending = shards
        self.results: list[tuple[int, Any]] = []
        self.client_ids: dict[int, int] = {}
        self.cancelled = False
        self.has_message = False


class _SyncIO:
    """Blocking I/O of ``RedisChannelLayer`` (which provides ``shards``, ``prefix`` and
    the decisions used here: ``_unavailable``, ``_popped``, ``_blpop_keys`` ...)."""

    shards: list[_Shard]
    prefix: str
    _single: bool

    def _sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    # -- scripts -----------------------------------------------------------

    def _call_many(self, calls: list[tuple[_Shard, Script, list[Any]]], *,
                   retry: bool) -> list[Any]:
        """Run scripts, one per entry, in one round trip per server (pipelined).

        With ``retry`` a failure after the commands were written is retried once
        on fresh connections (safe for idempotent scripts and for pops, where a
        lost reply only drops a message). Pushes pass ``retry=False``: a reply
        lost after the server ran the script must not make a second copy.
        """
        if retry:
            with contextlib.suppress(LayerUnavailable):
                return self._call_once(calls)
        return self._call_once(calls)

    def _call_once(self, calls: list[tuple[_Shard, Script, list[Any]]]) -> list[Any]:
        conns: list[tuple[Any, Any]] = []
        current = calls[0][0]
        try:
            for current, script, args in calls:
                pool = current.conns
                conns.append((pool, pool.get()))
                conns[-1][1].send_packed_command(_script_command(current, script, args))
            results = []
            for (_, conn), call in zip(conns, calls, strict=True):
                current, script, args = call
                results.append(self._script_reply(conn, current, script, args))
            return results
        except _NETWORK_ERRORS as exc:
            for _, conn in conns:
                conn.disconnect()
            raise self._unavailable(current, exc) from exc
        finally:
            for pool, conn in conns:
                pool.put(conn)

    def _script_reply(self, conn: Any, shard: _Shard, script: Script, args: list[Any]) -> Any:
        """The reply to ``script`` written on ``conn`` by ``_script_command``. A call
        refused for want of its code did not run: the library is loaded, or the shard
        falls back to ``EVALSHA`` (then ``EVAL``), and the call is written again."""
        for attempt in range(1, SCRIPT_ATTEMPTS + 1):
            try:
                return _read(conn)
            except ResponseError as exc:
                missing = _missing_script(shard, exc)
                if missing is None or attempt == SCRIPT_ATTEMPTS:
                    raise
            if missing == "library":
                self._load_library(conn, shard)
            conn.send_packed_command(
                _script_command(shard, script, args, source=missing == "script"))
        raise AssertionError("unreachable")

    def _load_library(self, conn: Any, shard: _Shard) -> None:
        """``FUNCTION LOAD`` the library on ``conn``; if the server refuses (an ACL,
        no memory), the shard uses ``EVALSHA`` instead."""
        conn.send_packed_command(LOAD_LIBRARY)
        try:
            _read(conn)
        except ResponseError:
            shard.functions = False

    def _call(self, shard: _Shard, name: str, args: list[Any], retry: bool) -> Any:
        return self._call_many([(shard, SCRIPTS[name], args)], retry=retry)[0]

    def _redis(self, shard: _Shard, fn: Callable[[redis.Redis], Any]) -> Any:
        """Run ``fn(client)`` (idempotent commands; redis-py retries them)."""
        try:
            return fn(shard.client)
        except _NETWORK_ERRORS as exc:
            raise self._unavailable(shard, exc) from exc

    def _apply_evictions(self, source: _Shard, evicted: list[Any]) -> None:
        """Remove evicted members from groups that live on other servers."""
        if self._single or not evicted:
            return
        for index, pairs in self._remote_evictions(source, evicted).items():
            shard = self.shards[index]

            def remove(client: redis.Redis, pairs: list[tuple[str, str]] = pairs) -> Any:
                pipe = client.pipeline(transaction=False)
                for channel, group in pairs:
                    pipe.zrem(f"{self.prefix}g:{group}", channel)
                return pipe.execute()

            self._redis(shard, remove)

    def _pipeline(self, shard: _Shard, script: Script, arg_lists: list[list[Any]]) -> list[Any]:
        """Run ``script`` once per argument list on one connection, in order; never
        retried once written (these are pushes). Calls the server refused for want of
        their code (a restart, a flush) did not run: only those are written again, in
        their order, once the code is there (``_settle``); a call that ran is never
        written twice."""

        def write(arg_lists: list[list[Any]], source: bool) -> None:
            conn.send_packed_command([b"".join(
                _script_command(shard, script, args, source=source)[0] for args in arg_lists)])

        pool = shard.conns
        try:
            conn = pool.get()
        except _NETWORK_ERRORS as exc:
            raise self._unavailable(shard, exc) from exc
        try:
            results: list[Any] = [None] * len(arg_lists)
            todo, source = list(range(len(arg_lists))), False
            for attempt in range(1, SCRIPT_ATTEMPTS + 1):
                write([arg_lists[i] for i in todo], source)
                replies: list[Any] = []
                for _ in todo:
                    try:
                        replies.append(_read(conn))
                    except ResponseError as exc:
                        replies.append(exc)
                todo, missing = _settle(shard, todo, replies, results,
                                        last=attempt == SCRIPT_ATTEMPTS)
                if not todo:
                    return results
                if missing == "library":
                    self._load_library(conn, shard)
                source = missing == "script"
            raise AssertionError("unreachable")
        except _NETWORK_ERRORS as exc:
            conn.disconnect()
            raise self._unavailable(shard, exc) from exc
        except BaseException:
            conn.disconnect()  # replies may be left unread: never reuse this connection
            raise
        finally:
            pool.put(conn)

    # -- blocking pops -----------------------------------------------------

    def _mpop_once(self, shard: _Shard, keys: list[str], count: int,
                   wait: float) -> list[Popped]:
        try:
            return self._mpop_reply(shard, self._blocking_command(
                shard, self._mpop_command(keys, count, wait)))
        except ResponseError as exc:
            raise self._no_mpop(exc) from exc

    def _blpop(self, shard: _Shard, queues: list[str], wait: float) -> Popped | None:
        reply = self._blocking_command(
            shard, _pack("BLPOP", *self._blpop_keys(queues), _seconds(wait)))
        return None if reply is None else self._popped(shard, *reply)

    def _blocking_command(self, shard: _Shard, command: list[bytes]) -> Any:
        """Write ``command`` on a connection of ``shard``'s blocking pool; its reply.

        A network error raises ``LayerUnavailable``. An error reply (``ResponseError``,
        such as an unknown ``BLMPOP``) keeps the connection; any other error, a
        cancelled or interrupted wait included, drops it (a reply may still come).
        """
        pool = shard.bconns
        try:
            conn = pool.get()
        except _NETWORK_ERRORS as exc:
            raise self._unavailable(shard, exc) from exc
        try:
            conn.send_packed_command(command)
            return _read(conn)
        except _NETWORK_ERRORS as exc:
            conn.disconnect()
            raise self._unavailable(shard, exc) from exc
        except ResponseError:
            raise
        except BaseException:
            conn.disconnect()
            raise
        finally:
            pool.put(conn)

    def _race(self, by_shard: dict[int, list[str]], wait: float) -> Popped | None:
        """Wait on every server at once; the first message wins (see module doc)."""
        race = _Race(len(by_shard))
        threads = [
            threading.Thread(target=self._race_wait,
                             args=(race, self.shards[index], queues, wait),
                             name=f"redis-layer-wait-{index}", daemon=True)
            for index, queues in by_shard.items()
        ]
        for thread in threads:
            thread.start()
        with race.cond:
            race.cond.wait_for(lambda: race.has_message or race.pending == 0,
                               timeout=wait + BLOCK_SOCKET_TIMEOUT)
            race.cancelled = True
        for _ in range(100):
            with race.cond:
                if race.pending == 0:
                    break
                waiting = [(index, cid) for index, cid in race.client_ids.items()
                           if index not in {i for i, _ in race.results}]
            for index, cid in waiting:
                with contextlib.suppress(_NETWORK_ERRORS):
                    self.shards[index].client.client_unblock(cid)
            with race.cond:
                race.cond.wait_for(lambda: race.pending == 0, timeout=0.05)
        lost_bells: dict[_Shard, list[str]] = {}
        winner = self._race_outcome(race.results, lost_bells)
        for shard, queues in lost_bells.items():
            with contextlib.suppress(LayerUnavailable):
                self._call(shard, "ring", self._args(*queues), retry=True)
        return winner

    def _race_wait(self, race: _Race, shard: _Shard, queues: list[str], wait: float) -> None:
        result: Any = None
        pool = shard.bconns
        conn = None
        try:
            with race.cond:
                if race.cancelled:
                    return
            conn = pool.get()
            conn.send_packed_command(conn.pack_commands(
                [("CLIENT", "ID"), ("BLPOP", *self._blpop_keys(queues), _seconds(wait))]))
            client_id = _read(conn)
            with race.cond:
                race.client_ids[shard.index] = client_id
                late = race.cancelled
            if late:
                shard.client.client_unblock(client_id)
            result = _read(conn)
        except _NETWORK_ERRORS as exc:
            if conn is not None:
                conn.disconnect()
            result = self._unavailable(shard, exc)
        except BaseException as exc:  # report, never kill the waiting caller
            if conn is not None:
                conn.disconnect()
            result = exc
        finally:
            if conn is not None:
                pool.put(conn)
            with race.cond:
                race.results.append((shard.index, result))
                race.pending -= 1
                if result is not None and not isinstance(result, BaseException):
                    race.has_message = True
                race.cond.notify_all()
