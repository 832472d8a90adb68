"""``--loop``: which asyncio loop runs under Twisted's reactor."""

from __future__ import annotations

import asyncio
from types import ModuleType

import pytest

from interface_server.event_loop import CHOICES, LoopUnavailable, loop_factory


def no_uvloop(name: str) -> ModuleType:
    raise ImportError(f"No module named {name!r}")


def test_auto_takes_uvloop_when_it_imports() -> None:
    uvloop = pytest.importorskip("uvloop")
    name, make = loop_factory("auto")
    assert (name, make) == ("uvloop", uvloop.new_event_loop)
    loop = make()
    try:
        assert isinstance(loop, uvloop.Loop)
    finally:
        loop.close()


def test_auto_falls_back_to_asyncio_without_uvloop() -> None:
    assert loop_factory("auto", importer=no_uvloop) == ("asyncio", asyncio.new_event_loop)


def test_asyncio_never_imports_uvloop() -> None:
    def forbidden(name: str) -> ModuleType:
        raise AssertionError(f"imported {name}")

    assert loop_factory("asyncio", importer=forbidden) == ("asyncio", asyncio.new_event_loop)


def test_uvloop_insists_and_names_the_import_error() -> None:
    with pytest.raises(LoopUnavailable, match=r"--loop uvloop.*No module named 'uvloop'"):
        loop_factory("uvloop", importer=no_uvloop)


def test_unknown_choice_names_the_choices() -> None:
    with pytest.raises(ValueError, match=r"'tokio'.*auto, asyncio, uvloop"):
        loop_factory("tokio")
    assert CHOICES == ("auto", "asyncio", "uvloop")
