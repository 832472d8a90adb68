"""Signals sent around every consumer a Django worker runs (the 1.x names).

``consumer_started`` and ``consumer_finished`` are sent with ``sender`` the
consumer and ``message`` the ``Message``, before and after it runs (also when
it raised). The app connects Django's ``close_old_connections`` to both, so
database connections are recycled between messages exactly as Django does
between requests (``CONN_MAX_AGE``, broken connections, stray transactions).
"""

from __future__ import annotations

from django.dispatch import Signal

consumer_started = Signal()
consumer_finished = Signal()
