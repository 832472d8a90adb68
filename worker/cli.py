"""``runworker``: the worker process's command line.

Every option can also be set by an environment variable, shown in ``--help``
(``SWITCHBOARD_WORKER_<OPTION>``; the layer also falls back to
``CHANNEL_LAYER_URL`` and ``REDIS_URL``). The current directory is importable,
so ``runworker myproject.routing:channel_routing`` works from a project root.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import click

from asgi_spec import DEFAULT_LAYER_URL, LayerConfigError, load_layer
from asgi_spec.exceptions import InvalidChannelName
from asgi_spec.layers.memory import MemoryChannelLayer
from asgi_spec.registry import HEARTBEAT_INTERVAL
from worker.exceptions import RouteError
from worker.routing import Router
from worker.supervisor import Supervisor, registry_cleaner
from worker.worker import Worker

ENV_PREFIX = "SWITCHBOARD_WORKER"
LAYER_ENVVARS = [f"{ENV_PREFIX}_LAYER", "CHANNEL_LAYER_URL", "REDIS_URL"]
_LEVELS = {0: logging.WARNING, 1: logging.INFO, 2: logging.DEBUG, 3: logging.DEBUG}


def configure_logging(verbosity: int) -> None:
    logging.basicConfig(
        level=_LEVELS[verbosity], stream=sys.stderr, force=True,
        format="%(asctime)s %(levelname)s %(name)s [%(process)d %(threadName)s] %(message)s",
    )


def _routing_path(argument: str | None, option: str | None) -> str:
    if argument and option and argument != option:
        raise click.UsageError(f"routing given twice: {argument!r} and --routing {option!r}")
    path = argument or option
    if not path:
        raise click.UsageError("no routing: give it as ROUTING or --routing, "
                               "e.g. runworker myproject.routing:channel_routing")
    return path


def load_router(path: str, param_hint: str) -> Router:
    """The ``Router`` of the routing at ``path``; a ``BadParameter`` saying why not."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return Router(path)
    except RouteError as exc:
        raise click.BadParameter(str(exc), param_hint=param_hint) from None


def open_layer(spec: str) -> Any:
    """The layer ``spec`` names, refusing the one-process memory layer; checked reachable."""
    refusal = ("the memory:// layer lives inside one process, so an interface server cannot "
               "reach this worker through it; use sqlite:///path.db or redis://host:6379/0")
    if spec.lower().startswith("memory://"):
        raise click.BadParameter(refusal, param_hint="--layer")
    try:
        layer = load_layer(spec)
    except LayerConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="--layer") from None
    except ConnectionError as exc:  # LayerUnavailable: a file or server we cannot reach
        raise click.ClickException(f"cannot open the channel layer {spec!r}: {exc}") from None
    if isinstance(layer, MemoryChannelLayer):
        raise click.BadParameter(refusal, param_hint="--layer")
    try:
        layer.check()
    except ConnectionError as exc:
        raise click.ClickException(f"cannot reach the channel layer: {exc}") from None
    return layer


def child_command(routing: str, layer: str, options: dict[str, Any], name: str | None) -> list[str]:
    """The command line of one supervised ``runworker`` child process."""
    command = [sys.executable, "-m", "worker.cli", routing, "--layer", layer,
               "--threads", str(options["threads"]), "--processes", "1",
               "--batch-size", str(options.get("batch_size", 1)),
               "--heartbeat-interval", repr(float(options.get("heartbeat_interval",
                                                              HEARTBEAT_INTERVAL))),
               "--verbosity", str(options["verbosity"])]
    for glob in options["only_channels"]:
        command += ["--only-channels", glob]
    for glob in options["exclude_channels"]:
        command += ["--exclude-channels", glob]
    if name:
        command += ["--name", name]
    if options["debug"]:
        command.append("--debug")
    return command


@click.command(context_settings={"auto_envvar_prefix": ENV_PREFIX,
                                 "help_option_names": ["-h", "--help"]})
@click.argument("routing_argument", metavar="[ROUTING]", required=False)
@click.option("--routing", "routing_option", metavar="MODULE:ATTR", show_envvar=True,
              envvar=f"{ENV_PREFIX}_ROUTING",
              help="The routing (a list of routes, or a {channel: consumer} dict), "
                   "instead of the ROUTING argument.")
@click.option("--layer", default=DEFAULT_LAYER_URL, show_default=True, envvar=LAYER_ENVVARS,
              show_envvar=True, metavar="URL|MODULE:ATTR",
              help="The channel layer: sqlite:///path.db, redis://host:6379/0, ... "
                   "or an importable layer object.")
@click.option("--only-channels", multiple=True, metavar="GLOB", show_envvar=True,
              help="Consume only the routed channels matching this glob (repeatable).")
@click.option("--exclude-channels", multiple=True, metavar="GLOB", show_envvar=True,
              help="Do not consume the channels matching this glob (repeatable).")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              show_envvar=True, help="Loop threads per process, sharing one layer.")
@click.option("--processes", type=click.IntRange(min=1), default=1, show_default=True,
              show_envvar=True, help="Worker processes; more than 1 runs a supervisor "
                                     "that restarts dead ones.")
@click.option("--batch-size", type=click.IntRange(min=1), default=1, show_default=True,
              show_envvar=True,
              help="For fast consumers: take up to this many waiting messages per receive "
                   "(fewer when consumers are slow: a batch holds about 5 ms of work) and "
                   "send their replies together. One thread works through a batch alone, "
                   "so keep 1 when consumer times vary.")
@click.option("-v", "--verbosity", type=click.IntRange(0, 3), default=1, show_default=True,
              show_envvar=True, help="0 warnings, 1 info, 2 debug.")
@click.option("--name", show_envvar=True,
              help="The worker's name in the registry (default: host-pid-random).")
@click.option("--heartbeat-interval", type=click.FloatRange(min=0.05), default=HEARTBEAT_INTERVAL,
              show_default=True, show_envvar=True, metavar="SECONDS",
              help="If this worker is killed, `switchboard status`, the interface servers' "
                   "metrics and their 503 decision show it stale within this many seconds "
                   "(it beats five times as often).")
@click.option("--debug/--no-debug", default=False, show_envvar=True,
              help="Close a WebSocket with 1011 when its consumer raises.")
@click.option("--reload", is_flag=True, default=False, show_envvar=True,
              help="Development: restart the worker whenever a .py file under the current "
                   "directory changes.")
def runworker(routing_argument: str | None, routing_option: str | None, layer: str,
              only_channels: tuple[str, ...], exclude_channels: tuple[str, ...], threads: int,
              processes: int, batch_size: int, verbosity: int, name: str | None,
              heartbeat_interval: float, debug: bool, reload: bool) -> None:
    """Consume the channels of ROUTING (module:attr) and run their consumers."""
    configure_logging(verbosity)
    if reload:
        sys.exit(run_with_reload(f"{ENV_PREFIX}_RELOAD"))
    routing = _routing_path(routing_argument, routing_option)
    router = load_router(routing, "ROUTING" if routing_argument else "--routing")
    channel_layer = open_layer(layer)
    try:
        worker = Worker(channel_layer, router, only_channels=only_channels,
                        exclude_channels=exclude_channels, name=name, threads=threads,
                        debug=debug, batch_size=batch_size,
                        heartbeat_interval=heartbeat_interval)
    except InvalidChannelName as exc:
        channel_layer.close()
        raise click.BadParameter(str(exc), param_hint="--name") from None
    except ValueError as exc:
        channel_layer.close()
        raise click.UsageError(str(exc)) from None
    if processes > 1:
        channel_layer.close()
        options = {"threads": threads, "verbosity": verbosity, "debug": debug,
                   "batch_size": batch_size, "heartbeat_interval": heartbeat_interval,
                   "only_channels": only_channels, "exclude_channels": exclude_channels}
        commands = [child_command(routing, layer, options, f"{name}-{n + 1}" if name else None)
                    for n in range(processes)]
        sys.exit(Supervisor(commands, on_exit=registry_cleaner(lambda: load_layer(layer))).run())
    try:
        code = worker.run()
    finally:
        channel_layer.close()
    sys.exit(code)


def run_with_reload(flag_envvar: str) -> int:
    """Run this very command again as a child, restarted when a ``.py`` file changes.

    The child is the command line this process was started with, minus
    ``--reload`` (and with ``flag_envvar`` off), so ``runworker``, ``python -m
    worker`` and ``manage.py runworker`` all reload the same way. SIGTERM stops
    the watcher and, through it, the child (SIGINT: it finishes its message).
    """
    import shlex
    import signal

    import watchfiles

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    command = [sys.executable, *[arg for arg in sys.orig_argv[1:] if arg != "--reload"]]
    os.environ[flag_envvar] = "false"
    signal.signal(signal.SIGTERM, interrupt)
    logging.getLogger("worker").info("reloading on changes to .py files under %s", os.getcwd())
    watchfiles.run_process(os.getcwd(), target=shlex.join(command), target_type="command",
                           watch_filter=watchfiles.PythonFilter(), sigint_timeout=30)
    return 0


def main() -> None:
    """The ``runworker`` console script."""
    runworker()


if __name__ == "__main__":
    main()
