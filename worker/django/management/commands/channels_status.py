"""``manage.py channels_status``: ``switchboard status`` with the layer from the settings.

Every option of ``switchboard status`` works the same (it *is* that command:
``asgi_spec.ops.cli.status`` parses and runs it), and so does its exit
status (0 healthy, 1 unhealthy, 3 layer unreachable). What the settings add:
the layer defaults to ``CHANNEL_LAYERS["default"]``; ``--layer ALIAS`` picks
another alias, and a URL (``--layer redis://...``) still works.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import click
from django.core.management.base import BaseCommand

from worker.django.management.commands.runworker import (
    _layer_alias,
    _program,
    strip_django_options,
)


def prepare(args: list[str]) -> list[str]:
    """The ``switchboard status`` arguments for ``manage.py channels_status args``."""
    args, alias = _layer_alias(strip_django_options(args))
    if alias is None and not os.environ.get("SWITCHBOARD_LAYER"):
        args = ["--layer", "worker.django.layers:raw.default", *args]
    return args


class Command(BaseCommand):
    help = "Show channels, groups, workers and interface servers, and what is wrong."
    requires_system_checks: list[str] = []  # a health probe must not fail on unrelated checks

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("args", nargs=argparse.REMAINDER,
                            help="switchboard status options; see `manage.py channels_status "
                                 "--help`")

    def run_from_argv(self, argv: list[str]) -> None:
        """``manage.py channels_status ARGS``: ARGS go to ``switchboard status`` (but Django's)."""
        args = argv[2:]
        prog_name = f"{_program(argv[0])} {argv[1]}"
        if any(a in ("-h", "--help") for a in args):
            self.print_help(argv[0], argv[1])
            return
        self.run_status(args, prog_name)

    def handle(self, *args: Any, **options: Any) -> None:
        self.run_status(list(args), "manage.py channels_status")

    def run_status(self, args: list[str], prog_name: str) -> None:
        from asgi_spec.ops.cli import status

        status.main(args=prepare(args), prog_name=prog_name)

    def print_help(self, prog_name: str, subcommand: str) -> None:
        from asgi_spec.ops.cli import status

        with click.Context(status, info_name=f"{_program(prog_name)} {subcommand}") as ctx:
            self.stdout.write(status.get_help(ctx))
            self.stdout.write("\nWith manage.py, --layer defaults to CHANNEL_LAYERS['default']; "
                              "--layer ALIAS names another alias.")
