"""``enforce_ordering``: the messages of one connection run one at a time, in ``order``.

Every ``websocket.*`` message carries an ``order`` (``websocket.connect`` 0,
each ``websocket.receive`` the next number, ``websocket.disconnect`` the
last), but workers in several processes take them from the layer at the same
time. A consumer decorated with ``enforce_ordering`` runs message *n* of a
connection only after message *n - 1* has finished -- its sends flushed, its
channel session saved -- and runs every message exactly once.

How this works. The state of a connection is one database row
(``OrderingState``: the ``order`` expected next and a ``running`` flag) and
the messages that came too early wait in another table (``ParkedMessage``).
Every step is one conditional ``UPDATE``/``DELETE``/``INSERT`` that commits
at once, so the database decides every race (a compare-and-set):

1. *Start*: ``UPDATE state SET running WHERE next = n AND NOT running``. One
   row changed: it is this message's turn, the consumer runs. No row: a
   message below ``next`` was already handled (a duplicate: dropped);
   otherwise the message is *parked* (inserted in ``ParkedMessage``).
2. *Finish* (after the consumer returned and its sends were flushed, or
   after it raised): ``UPDATE state SET next = n + 1, NOT running WHERE
   next = n AND running``. Then *release*: if message *n + 1* is parked, claim
   it with ``DELETE ... WHERE id = ...`` (one row deleted: this worker owns
   it) and send it back to its channel, where any worker takes it and finds
   it is its turn.
3. A worker that parked a message releases too, right after parking: if the
   message before it finished in between, one of the two claims it (the
   ``DELETE`` has one winner). This closes the 1.x race in which a message
   parked just after the other worker looked stayed stuck: the parker writes,
   then reads; the finisher writes, then reads; one of them sees both writes.

Nothing spins: a parked message waits in the table, not in a channel that is
read over and over, and it is sent once, when its turn comes.

The first message seen for a connection creates its row: ``next`` is 0 for
``websocket.connect``, otherwise 1 -- a receive exists only once the connect
consumer accepted the socket, so an undecorated connect consumer is fine.
After ``websocket.disconnect`` ran, the rows of the connection are deleted.
``ConsumeLater`` leaves ``next`` unchanged (the worker requeues the message
and it runs later, still first); any other exception counts as handled (it is
logged by the worker) so that the connection does not stop.

Limits (documented in ``docs/django/sessions.rst``):

* the rows live in the database ``CHANNEL_ORDERING_DATABASE`` (default
  ``"default"``; run ``migrate``), which all workers must share; each step
  must commit at once, so ordered consumers must not run inside an outer
  transaction shared between workers (a single-threaded ``ChannelTestCase``
  is fine);
* a message the layer loses (it expired unread, or the server closed the
  socket with 1013 because the layer was full) leaves a gap: the later
  messages wait until the gap is older than ``CHANNEL_ORDERING_GAP_TIMEOUT``
  (default 60 s, the layer's default expiry: a message that old cannot
  arrive any more) and then run, with a warning naming the skipped numbers.
  A gap is noticed when a later message arrives; a parked
  ``websocket.disconnect`` also asks the delay server (``asgi.delay``) to
  look again after the timeout, so the disconnect consumer still runs;
* a worker killed while running a message leaves the connection stopped
  until ``CHANNEL_SESSION_EXPIRY`` removes its rows: the message was taken
  from the layer, and running it twice is what this decorator prevents;
* synchronous consumers only.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import time
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from asgi_spec import codec, formats
from worker.django.sessions import consumer_decorator
from worker.exceptions import ConsumeLater
from worker.outbox import before_immediate, current_outbox, send_with_retry

logger = logging.getLogger("worker.django.ordering")

#: The content key of a ``websocket.disconnect`` copy sent back by the delay
#: server to look at a gap again (its value: how many looks so far).
RECHECK_KEY = "__ordering_recheck__"

#: How many times a parked disconnect asks the delay server to look again.
MAX_RECHECKS = 5

#: Seconds between two removals of expired rows in one process.
_CLEANUP_INTERVAL = 60.0
_last_cleanup = 0.0


def database() -> str:
    return getattr(settings, "CHANNEL_ORDERING_DATABASE", None) or "default"


def gap_timeout() -> float | None:
    """Seconds after which a gap in a connection's orders is skipped (``None``: never)."""
    return getattr(settings, "CHANNEL_ORDERING_GAP_TIMEOUT", 60.0)


def ordering_key(reply_channel: str) -> str:
    return hashlib.sha1(reply_channel.encode("utf-8")).hexdigest()


def _models() -> tuple[Any, Any]:
    from worker.django.models import OrderingState, ParkedMessage

    return OrderingState, ParkedMessage


# -- the steps (each one statement that commits at once) -------------------------------


def _ensure_state(key: str, first_order: int) -> None:
    """Create the connection's row if there is none (losing a creation race is fine)."""
    state_model, _ = _models()
    start = 0 if first_order == 0 else 1
    state_model.objects.using(database()).bulk_create(
        [state_model(key=key, next_order=start, running=False, updated_at=timezone.now())],
        ignore_conflicts=True)


def _start(key: str, order: int) -> bool:
    """Compare-and-set: is it ``order``'s turn? If so it is now running."""
    state_model, _ = _models()
    return state_model.objects.using(database()).filter(
        key=key, next_order=order, running=False,
    ).update(running=True, updated_at=timezone.now()) == 1


def _abandon(key: str, order: int) -> None:
    """The running message will come again (``ConsumeLater``): not running, same turn."""
    state_model, _ = _models()
    state_model.objects.using(database()).filter(
        key=key, next_order=order, running=True,
    ).update(running=False, updated_at=timezone.now())


def _finish(key: str, order: int) -> bool:
    """Compare-and-set: ``order`` ran; the next one may start."""
    state_model, _ = _models()
    return state_model.objects.using(database()).filter(
        key=key, next_order=order, running=True,
    ).update(next_order=order + 1, running=False, updated_at=timezone.now()) == 1


def _forget(key: str) -> None:
    """The connection is over (its disconnect ran): remove its rows."""
    state_model, parked_model = _models()
    db = database()
    parked_model.objects.using(db).filter(key=key).delete()
    state_model.objects.using(db).filter(key=key).delete()


def _park(key: str, order: int, channel: str, content: dict[str, Any]) -> bool:
    """Keep a message until its turn; ``False`` if that order is parked already."""
    _, parked_model = _models()
    db = database()
    try:
        with transaction.atomic(using=db):
            parked_model.objects.using(db).create(
                key=key, order=order, channel=channel, content=codec.encode(content),
                parked_at=timezone.now())
    except IntegrityError:
        return False
    return True


def _claim(row: Any) -> bool:
    """Take a parked message out of the table; ``True`` for the one caller that did."""
    _, parked_model = _models()
    deleted, _ = parked_model.objects.using(database()).filter(pk=row.pk).delete()
    return deleted == 1


def _state(key: str) -> Any:
    state_model, _ = _models()
    return state_model.objects.using(database()).filter(key=key).first()


def _skip_gap(key: str, state: Any) -> Any:
    """The first parked message after a gap old enough to be a lost message, or ``None``.

    Moves ``next`` over the gap with a compare-and-set (nothing running, ``next``
    unchanged), so that at most one worker skips it.
    """
    timeout = gap_timeout()
    if timeout is None:
        return None
    _, parked_model = _models()
    db = database()
    first = parked_model.objects.using(db).filter(
        key=key, order__gt=state.next_order).order_by("order").first()
    if first is None:
        return None
    cutoff = timezone.now() - timedelta(seconds=timeout)
    if first.parked_at > cutoff or state.updated_at > cutoff:
        return None
    state_model, _ = _models()
    moved = state_model.objects.using(db).filter(
        key=key, next_order=state.next_order, running=False,
    ).update(next_order=first.order, updated_at=timezone.now())
    if moved != 1:
        return None
    logger.warning("enforce_ordering: skipped order %d..%d of a connection (%s): not seen "
                   "for %g s, the layer lost them", state.next_order, first.order - 1,
                   first.channel, timeout)
    return first


def _release(key: str, layer: Any, mine: int | None = None) -> bool:
    """Send the parked message whose turn it is back to its channel.

    Returns ``True`` when that message is ``mine`` (the caller's own, just
    parked): the caller has claimed it and runs it itself.
    """
    state = _state(key)
    if state is None or state.running:
        return False
    _, parked_model = _models()
    row = parked_model.objects.using(database()).filter(
        key=key, order=state.next_order).first()
    if row is None:
        row = _skip_gap(key, state)
        if row is None:
            return False
    if not _claim(row):
        return False  # another worker claimed it
    if row.order == mine:
        return True
    # Progress: a gap check must not skip the message while it travels back.
    state_model, _ = _models()
    state_model.objects.using(database()).filter(
        key=key, next_order=row.order, running=False).update(updated_at=timezone.now())
    content = codec.decode(row.content)
    before_immediate()
    if not send_with_retry(layer, row.channel, content):
        logger.error("enforce_ordering: could not send order %d back to %r; it waits for "
                     "the next message of its connection", row.order, row.channel)
        _park(key, row.order, row.channel, content)
    return False


def _ask_recheck(message: Any, order: int) -> None:
    """A parked disconnect: ask the delay server to bring it back after the gap timeout."""
    timeout = gap_timeout()
    looks = message.content.get(RECHECK_KEY, 0)
    if timeout is None or not isinstance(looks, int) or looks >= MAX_RECHECKS:
        return
    content = dict(message.content)
    content[RECHECK_KEY] = looks + 1
    request = {"channel": message.channel.name, "content": content,
               "delay": int((timeout + 1) * 1000)}
    try:
        message.layer.send(formats.ASGI_DELAY, request)
    except Exception as exc:  # no delay server, a full channel: the next message looks
        logger.info("enforce_ordering: could not ask for a recheck of order %d: %s: %s",
                    order, type(exc).__name__, exc)


def _cleanup() -> None:
    """Remove the rows of connections without progress for ``CHANNEL_SESSION_EXPIRY``."""
    global _last_cleanup
    now = time.monotonic()
    if now - _last_cleanup < _CLEANUP_INTERVAL:
        return
    _last_cleanup = now
    state_model, parked_model = _models()
    db = database()
    cutoff = timezone.now() - timedelta(
        seconds=getattr(settings, "CHANNEL_SESSION_EXPIRY", 86400))
    parked_model.objects.using(db).filter(parked_at__lt=cutoff).delete()
    state_model.objects.using(db).filter(updated_at__lt=cutoff).delete()


# -- the decorator ---------------------------------------------------------------------


def _flush_sends() -> None:
    """Send what the consumer sent now, before the next message may start."""
    before_immediate()
    outbox = current_outbox()
    if outbox is not None:
        outbox.flush()


def _ordered(message: Any, call: Any) -> Any:
    if getattr(message, "channel_session", None) is not None:
        raise TypeError("enforce_ordering must be the outermost decorator: put it above "
                        "channel_session (the session must be loaded only once it is the "
                        "message's turn)")
    reply_channel = message.get("reply_channel")
    order = message.get("order")
    if not isinstance(reply_channel, str) or type(order) is not int:
        raise ValueError(f"enforce_ordering needs a message with a reply_channel and an int "
                         f"order; the message on {message.channel.name!r} has "
                         f"{'no order' if type(order) is not int else 'no reply_channel'}")
    key = ordering_key(reply_channel)
    channel = message.channel.name
    if RECHECK_KEY in message.content:
        # The delay server's copy of a parked disconnect: look at the gap again, and
        # run the disconnect here only if this worker claims the parked one.
        if not _still_parked(key, order):
            return None  # it ran (or its connection's rows expired)
        if not _release(key, message.layer, mine=order):
            if _still_parked(key, order):
                _ask_recheck(message, order)
            return None
        message.content.pop(RECHECK_KEY, None)
    elif order == 0:
        _cleanup()
    _ensure_state(key, order)
    while not _start(key, order):
        state = _state(key)
        if state is None:
            logger.warning("enforce_ordering: order %d on %r came after its connection "
                           "ended; dropped", order, channel)
            return None
        if order < state.next_order:
            logger.warning("enforce_ordering: order %d on %r was handled already (next "
                           "is %d); dropped", order, channel, state.next_order)
            return None
        if order == state.next_order and not state.running:
            continue  # it became this message's turn while we looked
        if not _park(key, order, channel, dict(message.content)):
            logger.warning("enforce_ordering: order %d on %r is waiting already; this copy "
                           "is dropped", order, channel)
            return None
        if not _release(key, message.layer, mine=order):
            if channel == formats.WEBSOCKET_DISCONNECT:
                _ask_recheck(message, order)
            return None
        # Our own message became runnable and this worker claimed it: run it here.
    try:
        result = call()
        if inspect.isawaitable(result):
            if hasattr(result, "close"):
                result.close()
            raise TypeError("enforce_ordering works on synchronous consumers only")
    except ConsumeLater:
        _abandon(key, order)
        raise
    except BaseException:
        _done(key, order, channel, message.layer)
        raise
    _flush_sends()
    _done(key, order, channel, message.layer)
    return result


def _still_parked(key: str, order: int) -> bool:
    _, parked_model = _models()
    return parked_model.objects.using(database()).filter(key=key, order=order).exists()


def _done(key: str, order: int, channel: str, layer: Any) -> None:
    if channel == formats.WEBSOCKET_DISCONNECT:
        _forget(key)
        return
    if not _finish(key, order):
        logger.error("enforce_ordering: order %d on %r finished but the connection's state "
                     "moved on meanwhile", order, channel)
    _release(key, layer)


_enforce = consumer_decorator(_ordered)


def enforce_ordering(consumer: Any = None, *, slight: bool = False) -> Any:
    """Run a connection's messages one at a time, in ``order``, each exactly once.

    Use it as the outermost decorator (above ``channel_session`` and the
    auth decorators), on every consumer of the connection's ordered messages::

        @enforce_ordering
        @channel_session_user
        def ws_receive(message): ...

    ``enforce_ordering(slight=True)`` is refused: "slight" ordering (connect
    before receive) is what the interface server already guarantees.
    """
    if slight:
        raise ValueError("enforce_ordering(slight=True) is not supported: the interface "
                         "server sends no websocket.receive before the connect consumer "
                         "accepted, so connect-before-receive always holds; use "
                         "@enforce_ordering for strict ordering")
    if consumer is None:
        return enforce_ordering
    if inspect.iscoroutinefunction(consumer):
        raise TypeError("enforce_ordering works on synchronous consumers only")
    return _enforce(consumer)
