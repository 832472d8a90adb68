"""The tables of ``enforce_ordering`` (``worker.django.ordering``): small, and emptied as
connections end.

* ``OrderingState`` -- one row per ordered connection: the ``order`` it
  expects next and whether a message of it is running now. Rows go when the
  connection's ``websocket.disconnect`` has run (or after
  ``CHANNEL_SESSION_EXPIRY`` seconds without progress).
* ``ParkedMessage`` -- a message that arrived before its turn, kept until the
  message before it has run.
"""

from __future__ import annotations

from django.db import models


class OrderingState(models.Model):
    key = models.CharField(max_length=40, primary_key=True)  # sha1 of the reply channel
    next_order = models.BigIntegerField()
    running = models.BooleanField(default=False)
    updated_at = models.DateTimeField(db_index=True)

    class Meta:
        db_table = "switchboard_ordering_state"

    def __str__(self) -> str:
        return f"{self.key}: next {self.next_order}{' (running)' if self.running else ''}"


class ParkedMessage(models.Model):
    id = models.BigAutoField(primary_key=True)
    key = models.CharField(max_length=40)
    order = models.BigIntegerField()
    channel = models.CharField(max_length=200)
    content = models.BinaryField()  # msgpack, as on the layer
    parked_at = models.DateTimeField(db_index=True)

    class Meta:
        db_table = "switchboard_ordering_parked"
        constraints = [models.UniqueConstraint(fields=["key", "order"],
                                               name="switchboard_parked_key_order")]

    def __str__(self) -> str:
        return f"{self.key}: order {self.order} on {self.channel}"
