"""The asyncio event loop under Twisted's reactor: uvloop where it is installed.

The interface server runs Twisted's ``AsyncioSelectorReactor`` on an asyncio loop,
and the channel layer's asyncio client shares that loop. uvloop (libuv, in C)
runs the loop's own machinery -- turns, ready callbacks, timers, the layer's
Redis transports -- for fewer instructions: measured under callgrind, an
unloaded WebSocket echo round trip costs the interface server 15% fewer, a plain
HTTP request 11% fewer (docs/benchmarks.rst). Twisted only asks the loop for
readers, writers, timers and ``call_soon``, which uvloop implements.

``--loop``: ``auto`` (the default) takes uvloop when it imports, else the
standard loop; ``uvloop`` insists (a usage error if it is missing); ``asyncio``
is the standard library's selector loop.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable
from types import ModuleType

#: The values of ``--loop``.
CHOICES = ("auto", "asyncio", "uvloop")


class LoopUnavailable(RuntimeError):
    """``--loop uvloop`` was asked for where uvloop cannot be imported."""


def loop_factory(choice: str, importer: Callable[[str], ModuleType] = importlib.import_module,
                 ) -> tuple[str, Callable[[], asyncio.AbstractEventLoop]]:
    """The name of the loop ``choice`` resolves to, and what makes one.

    ``auto``: uvloop if ``importer("uvloop")`` succeeds, else asyncio. ``uvloop``:
    uvloop or ``LoopUnavailable`` (naming the import error). ``asyncio``: the
    standard loop. Any other ``choice`` is a ``ValueError`` naming the choices.
    """
    if choice not in CHOICES:
        raise ValueError(f"unknown event loop {choice!r}; choose one of {', '.join(CHOICES)}")
    if choice != "asyncio":
        try:
            uvloop = importer("uvloop")
        except ImportError as exc:
            if choice == "uvloop":
                raise LoopUnavailable(f"--loop uvloop, but uvloop cannot be imported: {exc}"
                                      ) from exc
        else:
            return "uvloop", uvloop.new_event_loop
    return "asyncio", asyncio.new_event_loop
