"""A note in a room: what the binding tests send to groups."""

from django.db import models


class Note(models.Model):
    title = models.CharField(max_length=100)
    body = models.TextField(blank=True, default="")
    room = models.CharField(max_length=50, default="lobby")
    secret = models.CharField(max_length=50, blank=True, default="")  # never sent

    def __str__(self) -> str:
        return self.title

    def shout(self) -> str:
        return self.title.upper()
