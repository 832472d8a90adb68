"""The documentation site builds without warnings and keeps up with the code.

The specification pages in ``docs/spec`` are written by hand; these tests fail
when the code grows a public name, a statistics key, a message format or a
conformance test that the pages do not mention.
"""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
from pathlib import Path

import asgi_spec
from asgi_spec import STATISTICS_KEYS, conformance, formats
from asgi_spec.base import BaseChannelLayer

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
SPEC = DOCS / "spec"


def _page(name: str) -> str:
    return (SPEC / name).read_text(encoding="utf-8")


def _spec_text() -> str:
    return "\n".join(path.read_text(encoding="utf-8") for path in sorted(SPEC.glob("*.rst")))


def _missing(names: list[str] | tuple[str, ...], text: str) -> list[str]:
    """The entries of ``names`` that ``text`` never mentions as a whole word."""
    return [name for name in names if not re.search(rf"(?<!\w){re.escape(name)}(?!\w)", text)]


def test_docs_build_without_warnings(tmp_path):
    """``sphinx -W`` builds the HTML site: every warning would be an error."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-W",
            "--keep-going",
            "-b",
            "html",
            "-d",
            str(tmp_path / "doctrees"),
            str(DOCS),
            str(tmp_path / "html"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    if result.returncode != 0:
        print(result.stdout)
        print(result.stderr)
    assert result.returncode == 0, "sphinx failed; its output is printed above"
    assert (tmp_path / "html" / "spec" / "channel-layer.html").is_file()


def test_spec_names_every_public_name_and_statistics_key():
    """Every name in ``asgi_spec.__all__`` and every ``STATISTICS_KEYS`` entry is in the spec."""
    text = _spec_text()
    assert _missing(asgi_spec.__all__, text) == []
    assert _missing(STATISTICS_KEYS, text) == []


def test_layer_page_covers_the_layer_api():
    """The layer page names every public layer method, extension and constructor option."""
    text = _page("channel-layer.rst")
    methods = [
        name
        for name, _ in inspect.getmembers(BaseChannelLayer, callable)
        if not name.startswith("_")
    ]
    options = [
        name for name in inspect.signature(BaseChannelLayer.__init__).parameters if name != "self"
    ]
    assert _missing(methods, text) == []
    assert _missing(BaseChannelLayer.extensions, text) == []
    assert _missing(options, text) == []


def test_messages_page_covers_every_format():
    """The messages page names every export of ``asgi_spec.formats`` and every defaulted key."""
    text = _page("messages.rst")
    assert _missing(formats.__all__, text) == []
    keys = sorted({key for defaults in formats.DEFAULTS.values() for key in defaults})
    assert _missing(keys, text) == []


def test_conformance_page_lists_every_conformance_test():
    """Every test of the shipped conformance suite is listed on the conformance page."""
    text = _page("conformance.rst")
    tests = sorted(
        {
            name
            for cls in vars(conformance).values()
            if inspect.isclass(cls) and issubclass(cls, conformance.ChannelLayerConformance)
            for name in dir(cls)
            if name.startswith("test_")
        }
    )
    assert tests
    assert _missing(tests, text) == []
