"""The tables of ``enforce_ordering``: ordering state and parked messages."""

from django.db import migrations, models


class Migration(migrations.Migration):

    initial = True

    dependencies: list = []

    operations = [
        migrations.CreateModel(
            name="OrderingState",
            fields=[
                ("key", models.CharField(max_length=40, primary_key=True, serialize=False)),
                ("next_order", models.BigIntegerField()),
                ("running", models.BooleanField(default=False)),
                ("updated_at", models.DateTimeField(db_index=True)),
            ],
            options={"db_table": "switchboard_ordering_state"},
        ),
        migrations.CreateModel(
            name="ParkedMessage",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("key", models.CharField(max_length=40)),
                ("order", models.BigIntegerField()),
                ("channel", models.CharField(max_length=200)),
                ("content", models.BinaryField()),
                ("parked_at", models.DateTimeField(db_index=True)),
            ],
            options={
                "db_table": "switchboard_ordering_parked",
                "constraints": [models.UniqueConstraint(
                    fields=("key", "order"), name="switchboard_parked_key_order")],
            },
        ),
    ]
