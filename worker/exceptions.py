"""Exceptions a consumer may raise to steer the worker, and the worker's own errors."""

from __future__ import annotations


class RouteError(ValueError):
    """A routing entry is wrong: a bad channel name, filter, consumer or import path."""


class ImportPathError(ValueError):
    """A ``module:attr`` or ``module.attr`` path cannot be imported."""


class ConsumeLater(Exception):
    """Raise inside a consumer to put the message back on its channel for later.

    The worker requeues it with a retry counter (``__retries__``) and gives
    up, with a log line, after ``Worker.max_retries`` attempts. Sends the
    consumer made before raising are discarded.
    """


class DenyConnection(Exception):
    """Raise inside a ``websocket.connect`` consumer to reject the handshake (403)."""
