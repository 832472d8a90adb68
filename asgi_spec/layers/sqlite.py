"""The embedded SQLite layer: many processes on one machine, no service to run.

How this works: all processes open the same database file (WAL journal, so
readers never block the writer). Messages are rows ``(id, queue, channel,
expires_at, body)``; ``id`` is an autoincrement, so "oldest row of these
queues" is FIFO per channel and fair across channels. Every operation is one
short ``BEGIN IMMEDIATE`` transaction, which makes the capacity check and the
insert atomic and gives each message to exactly one receiver. Each transaction
first deletes expired rows (an index probe when there are none), counts them
and evicts their channels from every group.

Waking blocked receivers without polling: every receiver that blocks binds a
Unix datagram socket in a wake directory beside the database. After a commit,
a sender writes the queue name to each socket there; a receiver waiting on
that queue wakes and pops. A receiver registers (binds) before it looks at the
table, so a send that commits between its look and its wait still leaves a
datagram behind: no lost wake-up. Sockets of dead processes refuse the
datagram and are removed by the sender. Idle receivers sleep in ``select`` and
re-check the table once per ``blocking_timeout`` at most.

Async callers run each short transaction inline on a connection that never
waits for a lock; if another process holds it, the operation moves to a
helper thread, so the event loop never waits on a file lock. They wait for
datagrams with ``loop.add_reader``.

At-least-once queues (the ``acks`` extension): a message popped by
``receive_with_receipt`` is not deleted; its row gets a ``deadline`` (now +
``ack_timeout``), a fresh random ``token`` and ``deliveries + 1``, in the same
transaction as the pop. Pops skip rows whose deadline lies ahead, so the
message is invisible while in flight; ``ack`` deletes the row if the token
matches and the deadline has not passed. Once it has, the row is simply
visible again with its original ``id``: it comes back at the head of its
queue, in send order, with no row moved. Expiry deletes in-flight rows like
any other. Scheduled messages (the ``delay`` extension) are rows of their own
table; ``deliver_due`` moves due rows into ``messages`` (new ids, so they
queue behind what is there) in one transaction, then rings the queues.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import logging
import os
import select
import socket
import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from asgi_spec import names
from asgi_spec.acks import make_receipt
from asgi_spec.base import STATISTICS_KEYS, BaseChannelLayer, Popped
from asgi_spec.exceptions import (
    ChannelFull,
    ChannelLayerError,
    LayerConfigError,
    LayerUnavailable,
)
from asgi_spec.options import check_options, split_options

logger = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    channel TEXT NOT NULL,
    sent_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_expiry ON messages (expires_at);
CREATE TABLE IF NOT EXISTS memberships (
    grp TEXT NOT NULL,
    channel TEXT NOT NULL,
    added_at REAL NOT NULL,
    PRIMARY KEY (grp, channel)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS memberships_by_channel ON memberships (channel);
CREATE TABLE IF NOT EXISTS processes (
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    expires_at REAL NOT NULL,
    info BLOB NOT NULL,
    PRIMARY KEY (kind, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS scheduled (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    channel TEXT NOT NULL,
    due_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    capacity INTEGER NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS scheduled_by_due ON scheduled (due_at, id);
CREATE TABLE IF NOT EXISTS counters (
    queue TEXT NOT NULL,
    name TEXT NOT NULL,
    value INTEGER NOT NULL,
    PRIMARY KEY (queue, name)
) WITHOUT ROWID;
"""

#: Columns added to ``messages`` for at-least-once delivery (older files get them
#: with ``ALTER TABLE`` when a layer opens them).
_INFLIGHT_COLUMNS = {
    "deadline": "REAL",
    "deliveries": "INTEGER NOT NULL DEFAULT 0",
    "token": "TEXT",
}

#: A row a pop may take: not in flight, or in flight past its deadline.
_VISIBLE = "(deadline IS NULL OR deadline <= ?)"

#: The ``counters.queue`` value holding the totals.
_TOTAL = ""
_MAX_SOCKET_PATH = 100


def wake_directory(db_path: Path) -> Path:
    """Where the wake sockets for ``db_path`` live (short enough for AF_UNIX)."""
    beside = db_path.with_name(db_path.name + "-wake")
    if len(str(beside)) + 32 <= _MAX_SOCKET_PATH:
        return beside
    digest = hashlib.sha1(str(db_path).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"switchboard-wake-{digest}"


class _Busy(Exception):
    """Another process holds the write lock and this caller will not wait."""


class _Doorbell:
    """One receiver's wake socket, bound in the wake directory."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / f"{os.getpid()}-{names.random_suffix(8)}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.sock.bind(str(self.path))

    def drain(self) -> set[str]:
        """Queue names rung since the last drain."""
        rung: set[str] = set()
        while True:
            try:
                rung.add(self.sock.recv(512).decode("ascii", "replace"))
            except BlockingIOError:
                return rung

    def close(self) -> None:
        self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


class _Ringer:
    """Sends wake datagrams to every doorbell in the wake directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self._listing: list[str] = []
        self._mtime = -1
        self._lock = threading.Lock()

    def _targets(self) -> list[str]:
        try:
            mtime = os.stat(self.directory).st_mtime_ns
        except FileNotFoundError:
            return []
        if mtime != self._mtime:
            self._listing = [entry.path for entry in os.scandir(self.directory)]
            self._mtime = mtime
        return self._listing

    def ring(self, queues: set[str]) -> None:
        with self._lock:
            for queue in queues:
                payload = queue.encode("ascii")
                for target in self._targets():
                    try:
                        self.sock.sendto(payload, target)
                    except BlockingIOError:
                        pass  # its buffer is full of wake-ups already
                    except OSError as exc:
                        if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
                            with contextlib.suppress(OSError):
                                os.unlink(target)  # a dead process's doorbell

    def close(self) -> None:
        self.sock.close()


class SQLiteChannelLayer(BaseChannelLayer):
    """A channel layer in one SQLite file, shared by the processes of one machine.

    ``path`` is the database file; its directory is created when missing.
    """

    def __init__(self, path: str | os.PathLike[str] = ".switchboard/layer.db",
                 **options: Any) -> None:
        super().__init__(**options)
        self.path = Path(path).absolute()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LayerUnavailable(f"cannot create the directory of {self.path}: {exc}") from exc
        self.wake_dir = wake_directory(self.path)
        self.wake_dir.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._ringer = _Ringer(self.wake_dir)
        self._executor: ThreadPoolExecutor | None = None
        self._async_bells: dict[asyncio.AbstractEventLoop, _AsyncBell] = {}
        self._kept: list[tuple[str, bytes]] = []  # popped for a cancelled receive_async
        self._bells: list[_Doorbell] = []
        try:
            self._connection().executescript(_SCHEMA)
            self._add_inflight_columns()
        except sqlite3.Error as exc:
            raise LayerUnavailable(f"cannot set up SQLite layer {self.path}: {exc}") from exc

    def _add_inflight_columns(self) -> None:
        """Give a file made before the ``acks`` extension its in-flight columns, and
        the index that lets a pop skip in-flight rows without reading them."""
        with self._transaction() as db:
            have = {row[1] for row in db.execute("PRAGMA table_info(messages)")}
            for name, kind in _INFLIGHT_COLUMNS.items():
                if name not in have:
                    db.execute(f"ALTER TABLE messages ADD COLUMN {name} {kind}")
            db.execute("CREATE INDEX IF NOT EXISTS messages_by_queue_deadline "
                       "ON messages (queue, id, deadline)")
            db.execute("DROP INDEX IF EXISTS messages_by_queue")

    @classmethod
    def from_url(cls, url: str, **options: Any) -> SQLiteChannelLayer:
        """``sqlite:///relative.db`` or ``sqlite:////absolute.db`` (as SQLAlchemy)."""
        bare, query = split_options(url)
        path = bare.split("://", 1)[1]
        if not path.startswith("/") or path == "/":
            raise LayerConfigError(
                f"SQLite layer URL {url!r} needs a file: sqlite:///relative/path.db "
                "or sqlite:////absolute/path.db"
            )
        merged = {**query, **options}
        if "path" in merged:
            raise LayerConfigError(
                f"the SQLite file comes from the URL path, not an option: {url!r}"
            )
        check_options(cls, merged)
        return cls(path[1:], **merged)

    # -- connections and transactions --------------------------------------

    def _connection(self, nowait: bool = False) -> sqlite3.Connection:
        """This thread's connection; the ``nowait`` one fails at once on a lock."""
        attr = "nowait_db" if nowait else "db"
        db = getattr(self._local, attr, None)
        if db is None:
            try:
                db = sqlite3.connect(self.path, timeout=0 if nowait else 30,
                                     isolation_level=None, check_same_thread=False)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
            except sqlite3.Error as exc:
                raise LayerUnavailable(f"cannot open SQLite layer {self.path}: {exc}") from exc
            setattr(self._local, attr, db)
            with self._lock:
                self._connections.append(db)
        return db

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        nowait = getattr(self._local, "nowait", False)
        db = self._connection(nowait)
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if nowait:
                raise _Busy from exc
            raise LayerUnavailable(f"SQLite layer {self.path} is locked: {exc}") from exc
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    @staticmethod
    def _count(db: sqlite3.Connection, queue: str, name: str, n: int = 1) -> None:
        rows = [(_TOTAL, name, n)]
        if not names.is_single_reader(queue):
            rows.append((queue, name, n))
        db.executemany(
            "INSERT INTO counters (queue, name, value) VALUES (?, ?, ?) "
            "ON CONFLICT (queue, name) DO UPDATE SET value = value + excluded.value",
            rows,
        )

    def _expire(self, db: sqlite3.Connection, now: float) -> None:
        """Delete expired messages, count them, and evict their channels from groups."""
        dead = db.execute(
            "DELETE FROM messages WHERE expires_at <= ? RETURNING queue, channel", (now,)
        ).fetchall()
        for queue, channel in dead:
            self._count(db, queue, "messages_expired_count")
            db.execute("DELETE FROM memberships WHERE channel = ?", (channel,))

    def _push(self, db: sqlite3.Connection, channel: str, queue: str, body: bytes,
              now: float, capacity: int, expires_at: float | None = None) -> bool:
        """Insert one message unless the queue (in-flight rows included) is full."""
        (pending,) = db.execute(
            "SELECT COUNT(*) FROM messages WHERE queue = ?", (queue,)
        ).fetchone()
        if pending >= capacity:
            return False
        sent_at = now if expires_at is None else expires_at - self.expiry
        db.execute(
            "INSERT INTO messages (queue, channel, sent_at, expires_at, body) "
            "VALUES (?, ?, ?, ?, ?)",
            (queue, channel, sent_at, sent_at + self.expiry if expires_at is None
             else expires_at, body),
        )
        self._count(db, queue, "messages_count")
        return True

    def _pop(self, queues: list[str], acked: frozenset[str] = frozenset()) -> Popped | None:
        if self._kept:
            with self._lock:
                for index, (channel, body) in enumerate(self._kept):
                    if names.non_local_name(channel) in queues:
                        del self._kept[index]
                        return channel, body, None
        marks = ",".join("?" * len(queues))
        now = self.clock()
        with self._transaction() as db:
            self._expire(db, now)
            if not acked:
                row = db.execute(
                    f"DELETE FROM messages WHERE id = (SELECT id FROM messages "
                    f"WHERE queue IN ({marks}) AND {_VISIBLE} ORDER BY id LIMIT 1) "
                    f"RETURNING channel, body",
                    [*queues, now],
                ).fetchone()
                return None if row is None else (row[0], row[1], None)
            row = db.execute(
                f"SELECT id, queue, channel, body, deliveries FROM messages "
                f"WHERE queue IN ({marks}) AND {_VISIBLE} ORDER BY id LIMIT 1",
                [*queues, now],
            ).fetchone()
            if row is None:
                return None
            row_id, queue, channel, body, deliveries = row
            if queue not in acked:
                db.execute("DELETE FROM messages WHERE id = ?", (row_id,))
                return channel, body, None
            token = names.random_suffix(12)
            db.execute(
                "UPDATE messages SET deadline = ?, deliveries = ?, token = ? WHERE id = ?",
                (now + self.ack_timeout, deliveries + 1, token, row_id),
            )
        return channel, body, make_receipt(queue, f"{row_id}.{token}", deliveries + 1)

    def _pop_many(self, queues: list[str], limit: int) -> list[tuple[str, bytes]]:
        """Up to ``limit`` waiting messages of at-most-once ``queues``, in one transaction."""
        if limit <= 0:
            return []
        marks = ",".join("?" * len(queues))
        now = self.clock()
        with self._transaction() as db:
            self._expire(db, now)
            rows = db.execute(
                f"DELETE FROM messages WHERE id IN (SELECT id FROM messages "
                f"WHERE queue IN ({marks}) AND {_VISIBLE} ORDER BY id LIMIT ?) "
                f"RETURNING id, channel, body",
                [*queues, now, limit],
            ).fetchall()
        return [(channel, body) for _, channel, body in sorted(rows)]

    def _next_redelivery(self, queues: list[str]) -> float | None:
        """Seconds until an in-flight message of ``queues`` is due again (``None``: none)."""
        marks = ",".join("?" * len(queues))
        now = self.clock()
        (deadline,) = self._connection().execute(
            f"SELECT MIN(deadline) FROM messages WHERE queue IN ({marks}) AND deadline > ?",
            [*queues, now],
        ).fetchone()
        return None if deadline is None else max(deadline - now, 0.001)

    # -- storage hooks -----------------------------------------------------

    def _send(self, channel: str, queue: str, body: bytes, expires_at: float,
              capacity: int) -> None:
        [refused] = self._send_many([(channel, queue, body, expires_at, capacity)])
        if refused is not None:
            raise refused

    def _send_many(self, sends: list[tuple[str, str, bytes, float, int]],
                   ) -> list[ChannelLayerError | None]:
        """Every send in one transaction: all or none are written, so a retry after a
        lock (``_run``) never sends a message twice; one wake-up per queue."""
        outcomes: list[ChannelLayerError | None] = []
        if not sends:
            return outcomes
        with self._transaction() as db:
            self._expire(db, sends[0][3] - self.expiry)
            for channel, queue, body, expires_at, capacity in sends:
                now = expires_at - self.expiry
                if self._push(db, channel, queue, body, now, capacity):
                    outcomes.append(None)
                else:
                    self._count(db, queue, "channel_full_count")
                    outcomes.append(ChannelFull(
                        f"channel {channel!r} is full ({capacity} messages)"))
        sent = {send[1] for send, outcome in zip(sends, outcomes, strict=True)
                if outcome is None}
        if sent:
            self._ringer.ring(sent)
        return outcomes

    def _doorbell(self) -> _Doorbell:
        bell = getattr(self._local, "bell", None)
        if bell is None:
            bell = self._local.bell = _Doorbell(self.wake_dir)
            with self._lock:
                self._bells.append(bell)
        return bell

    def _receive(self, queues: list[str], timeout: float) -> tuple[str, bytes] | None:
        got = self._receive_receipt(queues, timeout, frozenset())
        return None if got is None else (got[0], got[1])

    def _receive_batch(self, queues: list[str], max_messages: int,
                       timeout: float) -> list[tuple[str, bytes]]:
        first = self._receive(queues, timeout)
        return [] if first is None else [first, *self._pop_many(queues, max_messages - 1)]

    def _receive_receipt(self, queues: list[str], timeout: float,
                         acked: frozenset[str]) -> Popped | None:
        if timeout <= 0:
            return self._pop(queues, acked)
        bell = self._doorbell()
        wanted = set(queues)
        deadline = time.monotonic() + timeout
        redeliverable = bool(self._acked(queues))
        bell.drain()
        while True:
            got = self._pop(queues, acked)
            remaining = deadline - time.monotonic()
            if got is not None or remaining <= 0:
                return got
            # Sleep until a datagram names one of our queues, an in-flight
            # message is due again, or time runs out.
            wake_at = deadline
            if redeliverable:
                redelivery = self._next_redelivery(queues)
                if redelivery is not None:
                    wake_at = min(deadline, time.monotonic() + redelivery)
            remaining = wake_at - time.monotonic()
            while remaining > 0:
                ready, _, _ = select.select([bell.sock], [], [], remaining)
                if ready and bell.drain() & wanted:
                    break
                remaining = wake_at - time.monotonic()

    async def _run(self, fn: Any, *args: Any) -> Any:
        """``fn(*args)`` for the event loop: inline unless the file is locked.

        Each operation is a short transaction, so it runs on the loop thread
        with a connection that never waits for a lock; when another process
        holds the lock, it is retried on a helper thread that may wait.
        """
        self._local.nowait = True
        try:
            return fn(*args)
        except _Busy:
            pass
        finally:
            self._local.nowait = False
        if self._executor is None:
            with self._lock:
                if self._executor is None:
                    self._executor = ThreadPoolExecutor(1, thread_name_prefix="sqlite-layer")
        future = asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            if fn == self._pop:
                future.add_done_callback(self._keep_popped)
            raise

    def _keep_popped(self, future: asyncio.Future[Any]) -> None:
        """A pop finished after its receive_async was cancelled: keep the message.

        A message popped in flight (with a receipt) is not kept: it is still
        in the file and is delivered again after ``ack_timeout``.
        """
        if not future.cancelled() and future.exception() is None and future.result():
            channel, body, receipt = future.result()
            if receipt is None:
                with self._lock:
                    self._kept.append((channel, body))

    async def _send_async(self, channel: str, queue: str, body: bytes, expires_at: float,
                          capacity: int) -> None:
        await self._run(self._send, channel, queue, body, expires_at, capacity)

    async def _send_many_async(self, sends: list[tuple[str, str, bytes, float, int]],
                               ) -> list[ChannelLayerError | None]:
        return await self._run(self._send_many, sends)

    async def _receive_async(self, queues: list[str],
                             timeout: float) -> tuple[str, bytes] | None:
        got = await self._receive_receipt_async(queues, timeout, frozenset())
        return None if got is None else (got[0], got[1])

    async def _receive_batch_async(self, queues: list[str], max_messages: int,
                                   timeout: float) -> list[tuple[str, bytes]]:
        first = await self._receive_async(queues, timeout)
        if first is None:
            return []
        return [first, *await self._run(self._pop_many, queues, max_messages - 1)]

    async def _receive_receipt_async(self, queues: list[str], timeout: float,
                                     acked: frozenset[str]) -> Popped | None:
        loop = asyncio.get_running_loop()
        bell = self._async_bells.get(loop)
        if bell is None:
            bell = self._async_bells[loop] = _AsyncBell(loop, self.wake_dir)
        deadline = loop.time() + timeout
        wanted = set(queues)
        redeliverable = bool(self._acked(queues))
        while True:
            waiter = bell.waiter(wanted)
            try:
                got = await self._run(self._pop, queues, acked)
                remaining = deadline - loop.time()
                if got is not None or remaining <= 0:
                    return got
                if redeliverable:
                    redelivery = self._next_redelivery(queues)
                    if redelivery is not None:
                        remaining = min(remaining, redelivery)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(waiter), remaining)
            finally:
                bell.forget(waiter)

    def _ack(self, queue: str, key: str, now: float) -> bool:
        row_id, _, token = key.partition(".")
        if not row_id.isdigit() or not token:
            return False
        with self._transaction() as db:
            self._expire(db, now)
            acked = db.execute(
                "DELETE FROM messages WHERE id = ? AND queue = ? AND token = ? "
                "AND deadline > ?",
                (int(row_id), queue, token, now),
            ).rowcount
        return acked == 1

    async def _ack_async(self, queue: str, key: str, now: float) -> bool:
        return bool(await self._run(self._ack, queue, key, now))

    def _send_later(self, channel: str, queue: str, body: bytes, due_at: float,
                    expires_at: float, capacity: int) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT INTO scheduled (queue, channel, due_at, expires_at, capacity, body) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (queue, channel, due_at, expires_at, capacity, body),
            )

    def _deliver_due(self, now: float, limit: int) -> int:
        moved = 0
        touched: set[str] = set()
        with self._transaction() as db:
            self._expire(db, now)
            due = db.execute(
                "SELECT id, queue, channel, expires_at, capacity FROM scheduled "
                "WHERE due_at <= ? ORDER BY due_at, id", (now,)
            ).fetchall()
            for row_id, queue, channel, expires_at, capacity in due:
                if moved >= limit:
                    break
                if expires_at <= now:
                    self._count(db, queue, "messages_expired_count")
                else:
                    (body,) = db.execute(
                        "SELECT body FROM scheduled WHERE id = ?", (row_id,)).fetchone()
                    if not self._push(db, channel, queue, body, now, capacity, expires_at):
                        continue  # its channel is full: it waits for the next call
                    moved += 1
                    touched.add(queue)
                db.execute("DELETE FROM scheduled WHERE id = ?", (row_id,))
        if touched:
            self._ringer.ring(touched)
        return moved

    def _next_due(self) -> float | None:
        (due_at,) = self._connection().execute("SELECT MIN(due_at) FROM scheduled").fetchone()
        return due_at

    def _group_add(self, group: str, channel: str, now: float) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT INTO memberships (grp, channel, added_at) VALUES (?, ?, ?) "
                "ON CONFLICT (grp, channel) DO UPDATE SET added_at = excluded.added_at",
                (group, channel, now),
            )

    def _group_discard(self, group: str, channel: str) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM memberships WHERE grp = ? AND channel = ?", (group, channel))

    def _live_members(self, db: sqlite3.Connection, group: str, now: float) -> list[str]:
        self._expire(db, now)
        db.execute(
            "DELETE FROM memberships WHERE grp = ? AND added_at <= ?",
            (group, now - self.group_expiry),
        )
        rows = db.execute(
            "SELECT channel FROM memberships WHERE grp = ? ORDER BY added_at", (group,)
        ).fetchall()
        return [channel for (channel,) in rows]

    def _group_channels(self, group: str, now: float) -> list[str]:
        with self._transaction() as db:
            return self._live_members(db, group, now)

    def _send_group(self, group: str, body: bytes, now: float) -> int:
        touched: set[str] = set()
        delivered = 0
        with self._transaction() as db:
            for channel in self._live_members(db, group, now):
                queue = names.non_local_name(channel)
                if self._push(db, channel, queue, body, now, self.get_capacity(queue)):
                    delivered += 1
                    touched.add(queue)
                else:
                    self._count(db, queue, "group_send_dropped_count")
        if touched:
            self._ringer.ring(touched)
        return delivered

    def _group_names(self, now: float) -> list[str]:
        with self._transaction() as db:
            db.execute("DELETE FROM memberships WHERE added_at <= ?", (now - self.group_expiry,))
            rows = db.execute("SELECT DISTINCT grp FROM memberships").fetchall()
        return [group for (group,) in rows]

    def _flush(self) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM messages")
            db.execute("DELETE FROM memberships")
            db.execute("DELETE FROM counters")
            db.execute("DELETE FROM processes")
            db.execute("DELETE FROM scheduled")

    def _register(self, kind: str, name: str, body: bytes, expires_at: float) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT INTO processes (kind, name, expires_at, info) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (kind, name) DO UPDATE SET "
                "expires_at = excluded.expires_at, info = excluded.info",
                (kind, name, expires_at, body),
            )

    def _unregister(self, kind: str, name: str) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM processes WHERE kind = ? AND name = ?", (kind, name))

    def _live_processes(self, kind: str, now: float) -> dict[str, bytes]:
        with self._transaction() as db:
            db.execute("DELETE FROM processes WHERE kind = ? AND expires_at <= ?", (kind, now))
            rows = db.execute(
                "SELECT name, info FROM processes WHERE kind = ?", (kind,)
            ).fetchall()
        return dict(rows)

    def _statistics(self, queue: str | None) -> dict[str, Any]:
        now = self.clock()
        with self._transaction() as db:
            self._expire(db, now)
            where, args = ((f" WHERE {_VISIBLE}", (now,)) if queue is None
                           else (f" WHERE queue = ? AND {_VISIBLE}", (queue, now)))
            pending, oldest = db.execute(
                f"SELECT COUNT(*), MIN(sent_at) FROM messages{where}", args
            ).fetchone()
            counts = dict(db.execute(
                "SELECT name, value FROM counters WHERE queue = ?",
                (_TOTAL if queue is None else queue,),
            ).fetchall())
        stats: dict[str, Any] = {key: counts.get(key, 0) for key in STATISTICS_KEYS}
        stats["messages_pending"] = pending
        stats["messages_max_age"] = 0.0 if oldest is None else now - oldest
        return stats

    def check(self) -> None:
        """Raise ``LayerUnavailable`` unless the database file can be written."""
        try:
            with self._transaction() as db:
                db.execute("SELECT COUNT(*) FROM processes").fetchone()
        except sqlite3.Error as exc:
            raise LayerUnavailable(f"SQLite layer {self.path} is not usable: {exc}") from exc

    def close(self) -> None:
        for bell in self._bells:
            bell.close()
        for async_bell in self._async_bells.values():
            async_bell.close()
        self._async_bells.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        self._ringer.close()
        with self._lock:
            for db in self._connections:
                db.close()
            self._connections.clear()
        self._local = threading.local()


class _AsyncBell:
    """A doorbell watched by an event loop; wakes the loop's waiting receives."""

    def __init__(self, loop: asyncio.AbstractEventLoop, directory: Path) -> None:
        self.loop = loop
        self.bell = _Doorbell(directory)
        self.waiters: dict[asyncio.Future[None], set[str]] = {}
        loop.add_reader(self.bell.sock.fileno(), self._rung)

    def waiter(self, queues: set[str]) -> asyncio.Future[None]:
        future: asyncio.Future[None] = self.loop.create_future()
        self.waiters[future] = queues
        return future

    def forget(self, future: asyncio.Future[None]) -> None:
        self.waiters.pop(future, None)

    def _rung(self) -> None:
        rung = self.bell.drain()
        for future, queues in self.waiters.items():
            if not future.done() and rung & queues:
                future.set_result(None)

    def close(self) -> None:
        if not self.loop.is_closed():
            self.loop.remove_reader(self.bell.sock.fileno())
        self.bell.close()
