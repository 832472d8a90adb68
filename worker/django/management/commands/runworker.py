"""``manage.py runworker``: the ``runworker`` console script, configured from the settings.

Every option of ``runworker`` works the same (it *is* that command:
``worker.cli.runworker`` parses and runs it). What the settings add:

* the routing defaults to ``CHANNEL_LAYERS[alias]["ROUTING"]`` (with the
  Django views behind ``http.request``): ``worker.django.routing:channel_routing``;
* the layer defaults to ``CHANNEL_LAYERS["default"]``; ``--layer ALIAS`` picks
  another alias, and a URL (``--layer redis://...``) still works;
* the system checks run first, and a configured in-memory layer is refused
  (switchboard.E004): workers in other processes could never see its messages.

Supervised children (``--processes N``) set Django up from the inherited
``DJANGO_SETTINGS_MODULE``.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import click
from django.core.management.base import BaseCommand, CommandError

from worker.django.checks import check_layers_are_shared
from worker.django.layers import InvalidChannelLayerError, configured_aliases, layer_settings

#: Django's own options, already applied by ``manage.py`` before this command runs.
_DJANGO_OPTIONS = {"--settings": True, "--pythonpath": True, "--traceback": False,
                   "--no-color": False, "--force-color": False}


def strip_django_options(argv: list[str]) -> list[str]:
    """``argv`` without ``--settings X``, ``--pythonpath=X``, ``--traceback`` and the like."""
    kept: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in _DJANGO_OPTIONS:
            skip = _DJANGO_OPTIONS[name] and "=" not in arg
            continue
        kept.append(arg)
    return kept


def _layer_alias(args: list[str]) -> tuple[list[str], str | None]:
    """Replace ``--layer ALIAS`` by the alias's import path; return the alias named."""
    aliases = set(configured_aliases())
    out: list[str] = []
    alias = None
    index = 0
    while index < len(args):
        arg = args[index]
        value = None
        if arg == "--layer" and index + 1 < len(args):
            value, index = args[index + 1], index + 1
        elif arg.startswith("--layer="):
            value = arg.split("=", 1)[1]
        if value is None:
            out.append(arg)
        elif "://" not in value and ":" not in value:
            if value not in aliases:
                raise CommandError(f"--layer {value!r} is neither a layer URL nor an alias of "
                                   f"CHANNEL_LAYERS ({', '.join(sorted(aliases))})")
            alias = value
            out += ["--layer", f"worker.django.layers:raw.{value}"]
        else:
            alias = ""
            out += ["--layer", value]
        index += 1
    return out, alias


def prepare(args: list[str]) -> list[str]:
    """The ``runworker`` arguments for ``manage.py runworker args``; checks the alias used."""
    args, alias = _layer_alias(strip_django_options(args))
    if alias is None:
        alias = "default"
        if not os.environ.get("SWITCHBOARD_WORKER_LAYER"):
            os.environ["SWITCHBOARD_WORKER_LAYER"] = "worker.django.layers:raw.default"
        else:
            alias = ""  # the environment names the layer itself
    routing_alias = alias or "default"
    try:
        found = layer_settings(routing_alias)
    except InvalidChannelLayerError as exc:
        raise CommandError(str(exc)) from None
    if found.routing is None:
        raise CommandError(f"CHANNEL_LAYERS[{routing_alias!r}] has no ROUTING; set it to your "
                           "routing's import path (see `manage.py check`)")
    suffix = "" if routing_alias == "default" else f"_{routing_alias}"
    os.environ["SWITCHBOARD_WORKER_ROUTING"] = f"worker.django.routing:channel_routing{suffix}"
    if alias:
        for error in check_layers_are_shared():
            if f"[{alias!r}]" in error.msg:
                raise CommandError(f"{error.msg}. {error.hint} ({error.id})")
    return args


def _program(argv0: str) -> str:
    name = os.path.basename(argv0)
    return "python -m django" if name == "__main__.py" else name


class Command(BaseCommand):
    help = "Run a worker: consume the routed channels and run their consumers."
    requires_system_checks = "__all__"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("args", nargs=argparse.REMAINDER,
                            help="runworker options; see `manage.py runworker --help`")

    def run_from_argv(self, argv: list[str]) -> None:
        """``manage.py runworker ARGS``: ARGS go to ``runworker`` untouched (but Django's)."""
        args = argv[2:]
        if any(a in ("-h", "--help") for a in args):
            self.print_help(argv[0], argv[1])
            return
        try:
            self.run_checks()
            self.run_worker(args, prog_name=f"{_program(argv[0])} {argv[1]}")
        except CommandError as exc:
            self.stderr.write(f"{type(exc).__name__}: {exc}")
            sys.exit(exc.returncode)

    def handle(self, *args: Any, **options: Any) -> None:
        self.run_worker(list(args), prog_name="manage.py runworker")

    def run_checks(self) -> None:
        self.check()

    def run_worker(self, args: list[str], prog_name: str) -> None:
        from worker.cli import runworker

        runworker.main(args=prepare(args), prog_name=prog_name)

    def print_help(self, prog_name: str, subcommand: str) -> None:
        from worker.cli import runworker

        with click.Context(runworker, info_name=f"{_program(prog_name)} {subcommand}") as ctx:
            self.stdout.write(runworker.get_help(ctx))
            self.stdout.write("\nWith manage.py, ROUTING and --layer default to "
                              "CHANNEL_LAYERS; --layer ALIAS names another alias.")
