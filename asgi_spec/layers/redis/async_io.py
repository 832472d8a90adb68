"""The layer's asyncio I/O (redis.asyncio): ``_AsyncIO``, mixed into the layer.

The twin of ``sync_io.py``, method for method (``_acall`` for ``_call`` ...), on the
running event loop's clients of each shard; ``_arun`` (``receiving.py``) awaits
these for the steps of a receive.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from redis.exceptions import ResponseError

from asgi_spec.exceptions import LayerUnavailable
from asgi_spec.layers.redis.connections import (
    _NETWORK_ERRORS,
    LOAD_LIBRARY,
    SCRIPT_ATTEMPTS,
    Popped,
    _aread,
    _asend,
    _missing_script,
    _pack,
    _script_command,
    _seconds,
    _settle,
    _Shard,
)
from asgi_spec.layers.redis.scripts import SCRIPTS, Script


class _AsyncIO:
    """Asyncio I/O of ``RedisChannelLayer``: the twin of ``_SyncIO``."""

    shards: list[_Shard]
    prefix: str
    _single: bool

    async def _asleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    # -- scripts -----------------------------------------------------------

    async def _acall_many(self, calls: list[tuple[_Shard, Script, list[Any]]], *,
                          retry: bool) -> list[Any]:
        """``_call_many`` for asyncio callers."""
        if retry:
            with contextlib.suppress(LayerUnavailable):
                return await self._acall_once(calls)
        return await self._acall_once(calls)

    async def _acall_once(self, calls: list[tuple[_Shard, Script, list[Any]]]) -> list[Any]:
        conns: list[tuple[Any, Any]] = []
        current = calls[0][0]
        try:
            for current, script, args in calls:
                pool = (await current.aclients()).conns
                conns.append((pool, await pool.aget()))
                await _asend(conns[-1][1], _script_command(current, script, args))
            results = []
            for (_, conn), call in zip(conns, calls, strict=True):
                current, script, args = call
                results.append(await self._ascript_reply(conn, current, script, args))
            return results
        except _NETWORK_ERRORS as exc:
            for _, conn in conns:
                await conn.disconnect()
            raise self._unavailable(current, exc) from exc
        finally:
            for pool, conn in conns:
                pool.put(conn)

    async def _ascript_reply(self, conn: Any, shard: _Shard, script: Script,
                             args: list[Any]) -> Any:
        """``_script_reply`` for asyncio callers."""
        for attempt in range(1, SCRIPT_ATTEMPTS + 1):
            try:
                return await _aread(conn)
            except ResponseError as exc:
                missing = _missing_script(shard, exc)
                if missing is None or attempt == SCRIPT_ATTEMPTS:
                    raise
            if missing == "library":
                await self._aload_library(conn, shard)
            await _asend(conn, _script_command(shard, script, args,
                                               source=missing == "script"))
        raise AssertionError("unreachable")

    async def _aload_library(self, conn: Any, shard: _Shard) -> None:
        """``_load_library`` for asyncio callers."""
        await _asend(conn, LOAD_LIBRARY)
        try:
            await _aread(conn)
        except ResponseError:
            shard.functions = False

    async def _acall(self, shard: _Shard, name: str, args: list[Any], retry: bool) -> Any:
        return (await self._acall_many([(shard, SCRIPTS[name], args)], retry=retry))[0]

    async def _aapply_evictions(self, source: _Shard, evicted: list[Any]) -> None:
        if self._single or not evicted:
            return
        for index, pairs in self._remote_evictions(source, evicted).items():
            shard = self.shards[index]
            try:
                pipe = (await shard.aclients()).client.pipeline(transaction=False)
                for channel, group in pairs:
                    pipe.zrem(f"{self.prefix}g:{group}", channel)
                await pipe.execute()
            except _NETWORK_ERRORS as exc:
                raise self._unavailable(shard, exc) from exc

    async def _apipeline(self, shard: _Shard, script: Script,
                         arg_lists: list[list[Any]]) -> list[Any]:
        """``_pipeline`` for asyncio callers."""
        pool = (await shard.aclients()).conns
        try:
            conn = await pool.aget()
        except _NETWORK_ERRORS as exc:
            raise self._unavailable(shard, exc) from exc

        async def write(arg_lists: list[list[Any]], source: bool) -> None:
            await _asend(conn, [b"".join(
                _script_command(shard, script, args, source=source)[0] for args in arg_lists)])

        try:
            results: list[Any] = [None] * len(arg_lists)
            todo, source = list(range(len(arg_lists))), False
            for attempt in range(1, SCRIPT_ATTEMPTS + 1):
                await write([arg_lists[i] for i in todo], source)
                replies: list[Any] = []
                for _ in todo:
                    try:
                        replies.append(await _aread(conn))
                    except ResponseError as exc:
                        replies.append(exc)
                todo, missing = _settle(shard, todo, replies, results,
                                        last=attempt == SCRIPT_ATTEMPTS)
                if not todo:
                    return results
                if missing == "library":
                    await self._aload_library(conn, shard)
                source = missing == "script"
            raise AssertionError("unreachable")
        except _NETWORK_ERRORS as exc:
            await conn.disconnect()
            raise self._unavailable(shard, exc) from exc
        except BaseException:
            await conn.disconnect()  # replies may be left unread: never reuse this connection
            raise
        finally:
            pool.put(conn)

    # -- blocking pops -----------------------------------------------------

    async def _ampop_once(self, shard: _Shard, keys: list[str], count: int,
                          wait: float) -> list[Popped]:
        try:
            return self._mpop_reply(shard, await self._ablocking_command(
                shard, self._mpop_command(keys, count, wait)))
        except ResponseError as exc:
            raise self._no_mpop(exc) from exc

    async def _ablpop(self, shard: _Shard, queues: list[str], wait: float) -> Popped | None:
        reply = await self._ablocking_command(
            shard, _pack("BLPOP", *self._blpop_keys(queues), _seconds(wait)))
        return None if reply is None else self._popped(shard, *reply)

    async def _ablocking_command(self, shard: _Shard, command: list[bytes]) -> Any:
        """``_blocking_command`` for asyncio callers: a cancelled wait drops its
        connection, whose reply may still come."""
        pool = (await shard.aclients()).bconns
        try:
            conn = await pool.aget()
        except _NETWORK_ERRORS as exc:
            raise self._unavailable(shard, exc) from exc
        try:
            await _asend(conn, command)
            return await _aread(conn)
        except _NETWORK_ERRORS as exc:
            await conn.disconnect()
            raise self._unavailable(shard, exc) from exc
        except ResponseError:
            raise
        except BaseException:
            await conn.disconnect()
            raise
        finally:
            pool.put(conn)

    async def _arace(self, by_shard: dict[int, list[str]], wait: float) -> Popped | None:
        """``_race`` with one task per server."""
        client_ids: dict[int, int] = {}
        cancelled = [False]

        async def wait_on(shard: _Shard, queues: list[str]) -> Any:
            clients = await shard.aclients()
            pool = clients.bconns
            try:
                conn = await pool.aget()
            except _NETWORK_ERRORS as exc:
                return self._unavailable(shard, exc)
            try:
                await _asend(conn, conn.pack_commands(
                    [("CLIENT", "ID"), ("BLPOP", *self._blpop_keys(queues), _seconds(wait))]))
                client_ids[shard.index] = await _aread(conn)
                if cancelled[0]:
                    await clients.client.client_unblock(client_ids[shard.index])
                return await _aread(conn)
            except _NETWORK_ERRORS as exc:
                await conn.disconnect()
                return self._unavailable(shard, exc)
            finally:
                pool.put(conn)

        tasks = {asyncio.ensure_future(wait_on(self.shards[index], queues)): index
                 for index, queues in by_shard.items()}
        results: list[tuple[int, Any]] = []
        pending = set(tasks)
        try:
            while pending and not any(r is not None and not isinstance(r, BaseException)
                                      for _, r in results):
                done, pending = await asyncio.wait(pending,
                                                   return_when=asyncio.FIRST_COMPLETED)
                results.extend((tasks[task], task.result()) for task in done)
            cancelled[0] = True
            for _ in range(100):
                if not pending:
                    break
                for task in pending:
                    index = tasks[task]
                    if index in client_ids:
                        with contextlib.suppress(_NETWORK_ERRORS):
                            await (await self.shards[index].aclients()).client.client_unblock(
                                client_ids[index])
                done, pending = await asyncio.wait(pending, timeout=0.05)
                results.extend((tasks[task], task.result()) for task in done)
        finally:
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        lost_bells: dict[_Shard, list[str]] = {}
        winner = self._race_outcome(results, lost_bells)
        for shard, queues in lost_bells.items():
            with contextlib.suppress(LayerUnavailable):
                await self._acall(shard, "ring", self._args(*queues), retry=True)
        return winner
