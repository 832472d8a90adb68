"""Rooms, their messages (the history a newcomer sees) and who is present.

Workers are stateless, so everything a room knows lives here: the database
is the one place every worker process sees.
"""

from __future__ import annotations

from typing import Any

from django.db import models

MAX_NAME = 40
MAX_TEXT = 2000


class Room(models.Model):
    slug = models.SlugField(max_length=50, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug


class Message(models.Model):
    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="messages")
    name = models.CharField(max_length=MAX_NAME)
    text = models.TextField(max_length=MAX_TEXT)
    sent_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["room", "id"])]

    def __str__(self) -> str:
        return f"{self.name}: {self.text[:40]}"

    def as_dict(self) -> dict[str, Any]:
        """What clients get: JSON-ready, the id doubling as a cursor."""
        return {"id": self.id, "name": self.name, "text": self.text,
                "sent_at": self.sent_at.isoformat()}


class Presence(models.Model):
    """One open WebSocket in a room, keyed by its reply channel."""

    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="presences")
    channel = models.CharField(max_length=255, unique=True)
    name = models.CharField(max_length=MAX_NAME)
    joined_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.name} in {self.room_id}"
