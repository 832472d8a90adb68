"""The Note table."""

from django.db import migrations, models


class Migration(migrations.Migration):

    initial = True

    dependencies: list = []

    operations = [
        migrations.CreateModel(
            name="Note",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True,
                                           serialize=False, verbose_name="ID")),
                ("title", models.CharField(max_length=100)),
                ("body", models.TextField(blank=True, default="")),
                ("room", models.CharField(default="lobby", max_length=50)),
                ("secret", models.CharField(blank=True, default="", max_length=50)),
            ],
        ),
    ]
