"""``switchboard``: the operator's command line. ``switchboard status`` for now.

``status`` takes one snapshot of the layer (``asgi_spec.ops.snapshot``),
diagnoses it and prints the report, or a JSON document with ``--json``.
``--watch`` refreshes it every ``--interval`` seconds until Ctrl-C (or
``--count`` refreshes), judging counters by what changed since the last look.

The exit status makes it a health probe: 0 healthy, 1 unhealthy (an error,
or with ``--strict`` a warning too), 2 a usage error, 3 the layer cannot be
opened or read. With ``--watch`` it is the status of the last look.

Layer choice, as every Switchboard command: ``--layer``, else
``SWITCHBOARD_LAYER``, ``CHANNEL_LAYER_URL``, ``REDIS_URL``, else the
embedded SQLite layer (``asgi_spec.DEFAULT_LAYER_URL``); a URL or an
importable ``module:attr``. Other options are also ``SWITCHBOARD_STATUS_*``
environment variables.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Any

import click

from asgi_spec import DEFAULT_LAYER_URL, ChannelLayerError, LayerConfigError, load_layer
from asgi_spec.exceptions import InvalidChannelName
from asgi_spec.ops.diagnose import diagnose, healthy
from asgi_spec.ops.render import render_json, render_text
from asgi_spec.ops.snapshot import Snapshot, snapshot

LAYER_ENVVARS = ["SWITCHBOARD_LAYER", "CHANNEL_LAYER_URL", "REDIS_URL"]
EXIT_HEALTHY, EXIT_UNHEALTHY, EXIT_USAGE, EXIT_LAYER = 0, 1, 2, 3


class LayerProblem(Exception):
    """The layer cannot be opened or read (exit status 3)."""


def _sqlite_file(spec: str) -> Path | None:
    """The database file a ``sqlite://`` URL names (None for other layers)."""
    if not spec.lower().startswith("sqlite://"):
        return None
    path = spec.split("://", 1)[1].split("?", 1)[0]
    return Path(path[1:]) if path.startswith("/") and path != "/" else None


def open_layer(spec: str) -> Any:
    """The layer ``spec`` names, checked reachable; ``LayerProblem`` saying why not.

    A SQLite file that does not exist is an error rather than a new, empty
    layer: a status command must not make one where nothing ever ran.
    """
    database = _sqlite_file(spec)
    if database is not None and not database.exists():
        raise LayerProblem(f"no SQLite layer at {database.absolute()}: nothing has run with "
                           "this layer (run status from the project directory, or give "
                           "--layer)")
    try:
        layer = load_layer(spec)
    except LayerConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="--layer") from None
    except (ChannelLayerError, ConnectionError, OSError) as exc:
        raise LayerProblem(f"cannot open the channel layer: {exc}") from None
    try:
        layer.check()
    except (ChannelLayerError, ConnectionError, OSError) as exc:
        _close(layer)
        raise LayerProblem(f"cannot reach the channel layer: {exc}") from None
    return layer


def _close(layer: Any) -> None:
    with contextlib.suppress(Exception):  # closing is best effort
        layer.close()


def look(layer: Any, channels: tuple[str, ...], members: bool) -> Snapshot:
    try:
        return snapshot(layer, channels=channels, members=members)
    except InvalidChannelName as exc:
        raise click.BadParameter(str(exc), param_hint="--channel") from None
    except (ChannelLayerError, ConnectionError, OSError) as exc:
        raise LayerProblem(f"cannot read the channel layer: {exc}") from None


def _colour(text: str) -> str:
    """Colour the problem labels and the verdict (click drops colours off a terminal)."""
    lines = []
    for line in text.split("\n"):
        if line.startswith("  ERROR"):
            line = click.style(line, fg="red", bold=True)
        elif line.startswith("  WARNING"):
            line = click.style(line, fg="yellow")
        elif line.startswith(("HEALTHY", "UNHEALTHY")):
            line = click.style(line, fg="green" if line.startswith("H") else "red", bold=True)
        lines.append(line)
    return "\n".join(lines)


@click.group(context_settings={"help_option_names": ["-h", "--help"],
                               "max_content_width": 100})
def cli() -> None:
    """See inside a Switchboard deployment."""


@cli.command(context_settings={"auto_envvar_prefix": "SWITCHBOARD_STATUS",
                               "show_default": True, "max_content_width": 100})
@click.option("--layer", default=DEFAULT_LAYER_URL, envvar=LAYER_ENVVARS, show_envvar=True,
              metavar="URL|MODULE:ATTR",
              help="The channel layer: sqlite:///path.db, redis://host:6379/0, ... "
                   "or an importable layer object.")
@click.option("-c", "--channel", "channels", multiple=True, metavar="NAME", show_envvar=True,
              envvar="SWITCHBOARD_STATUS_CHANNEL",
              help="Also show this channel (or srv! reply queue); repeatable. Channels that "
                   "workers consume and servers' reply queues are shown anyway.")
@click.option("--members", is_flag=True, show_envvar=True,
              help="List the member channels of every group.")
@click.option("--json", "as_json", is_flag=True, show_envvar=True,
              envvar="SWITCHBOARD_STATUS_JSON",
              help="Print JSON (one document per refresh with --watch).")
@click.option("-w", "--watch", is_flag=True, show_envvar=True,
              help="Refresh until Ctrl-C, judging counters by what changed since the last look.")
@click.option("-i", "--interval", type=click.FloatRange(min=0.1), default=2.0,
              show_envvar=True, help="Seconds between refreshes with --watch.")
@click.option("--count", type=click.IntRange(min=1), show_envvar=True,
              help="With --watch: stop after this many refreshes.")
@click.option("--strict", is_flag=True, show_envvar=True,
              help="Warnings make the status unhealthy too (exit 1).")
def status(layer: str, channels: tuple[str, ...], members: bool, as_json: bool, watch: bool,
           interval: float, count: int | None, strict: bool) -> None:
    """Channels, groups, workers and interface servers, and what is wrong.

    Exit status: 0 healthy, 1 unhealthy, 2 usage error, 3 the layer cannot be
    reached. Use it as a health probe: `switchboard status > /dev/null`.
    """
    if layer.lower().startswith("memory://"):
        click.echo("switchboard: note: memory:// is a new, empty layer inside this command; "
                   "give the layer your processes share", err=True)
    try:
        channel_layer = open_layer(layer)
    except LayerProblem as exc:
        click.echo(f"switchboard: {exc}", err=True)
        sys.exit(EXIT_LAYER)
    try:
        code = _run(channel_layer, channels, members, as_json, watch, interval, count, strict)
    finally:
        _close(channel_layer)
    sys.exit(code)


def _run(layer: Any, channels: tuple[str, ...], members: bool, as_json: bool, watch: bool,
         interval: float, count: int | None, strict: bool) -> int:
    previous: Snapshot | None = None
    code = EXIT_HEALTHY
    looks = 0
    clock = getattr(layer, "clock", time.time)
    try:
        while True:
            try:
                current = look(layer, channels, members)
            except LayerProblem as exc:
                if not watch:
                    click.echo(f"switchboard: {exc}", err=True)
                    return EXIT_LAYER
                code = EXIT_LAYER
                _show(f"switchboard: {exc} (retrying every {interval:g} s)\n", watch,
                      as_json, err=True)
            else:
                now = clock()
                problems = diagnose(current, now, previous=previous)
                if as_json:
                    text = render_json(current, problems, now, previous=previous,
                                       strict=strict)
                else:
                    text = _colour(render_text(current, problems, now, previous=previous,
                                               strict=strict))
                    if watch:
                        text += f"\nrefreshing every {interval:g} s; Ctrl-C to stop\n"
                _show(text, watch, as_json)
                code = EXIT_HEALTHY if healthy(problems, strict=strict) else EXIT_UNHEALTHY
                previous = current
            looks += 1
            if not watch or (count is not None and looks >= count):
                return code
            time.sleep(interval)
    except KeyboardInterrupt:
        return code


def _show(text: str, watch: bool, as_json: bool, err: bool = False) -> None:
    if watch and not as_json and not err:
        click.clear()
    click.echo(text, nl=False, err=err)
    sys.stdout.flush()


def main() -> None:
    """The ``switchboard`` console script."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # module:attr layers from the project directory
    cli()


if __name__ == "__main__":
    main()
