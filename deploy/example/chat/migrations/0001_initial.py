"""Rooms, messages and presence (made by ``makemigrations``, lines wrapped)."""

import django.db.models.deletion
from django.db import migrations, models


def _id() -> models.BigAutoField:
    return models.BigAutoField(auto_created=True, primary_key=True, serialize=False,
                               verbose_name="ID")


def _room(related_name: str) -> models.ForeignKey:
    return models.ForeignKey(on_delete=django.db.models.deletion.CASCADE,
                             related_name=related_name, to="chat.room")


class Migration(migrations.Migration):
    initial = True

    dependencies = []

    operations = [
        migrations.CreateModel(
            name="Room",
            fields=[
                ("id", _id()),
                ("slug", models.SlugField(unique=True)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
            ],
            options={"ordering": ["slug"]},
        ),
        migrations.CreateModel(
            name="Presence",
            fields=[
                ("id", _id()),
                ("channel", models.CharField(max_length=255, unique=True)),
                ("name", models.CharField(max_length=40)),
                ("joined_at", models.DateTimeField(auto_now_add=True)),
                ("room", _room("presences")),
            ],
        ),
        migrations.CreateModel(
            name="Message",
            fields=[
                ("id", _id()),
                ("name", models.CharField(max_length=40)),
                ("text", models.TextField(max_length=2000)),
                ("sent_at", models.DateTimeField(auto_now_add=True)),
                ("room", _room("messages")),
            ],
            options={
                "ordering": ["id"],
                "indexes": [models.Index(fields=["room", "id"],
                                         name="chat_messag_room_id_12c833_idx")],
            },
        ),
    ]
