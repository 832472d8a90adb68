"""The ``worker.django`` app: registers the system checks, database hygiene and bindings."""

from __future__ import annotations

from django.apps import AppConfig


class SwitchboardConfig(AppConfig):
    name = "worker.django"
    label = "switchboard"
    verbose_name = "Switchboard channels"
    default = True

    def ready(self) -> None:
        from django.db import close_old_connections

        from worker.django import binding, checks, signals

        checks.register_all()
        # Recycle database connections between messages as Django does between
        # requests (the view consumer also sends request_started/finished).
        signals.consumer_started.connect(close_old_connections,
                                         dispatch_uid="switchboard_close_old_started")
        signals.consumer_finished.connect(close_old_connections,
                                          dispatch_uid="switchboard_close_old_finished")
        # Model bindings: every app's ``bindings`` module, then every binding made so far.
        binding.register_all()
