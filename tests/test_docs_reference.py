"""The command reference pages are generated from the click commands and cover them whole."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import click
import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
sys.path.insert(0, str(DOCS / "_ext"))

import clickref  # noqa: E402  (docs/_ext is not a package)

PAGES = {
    "interfaceserver": "interface_server.cli:main",
    "runworker": "worker.cli:runworker",
    "rundelay": "worker.delay:rundelay",
}


@pytest.mark.parametrize(("prog", "path"), sorted(PAGES.items()))
def test_reference_page_renders_its_command(prog, path):
    """Each reference page asks the extension for the right command under its name."""
    text = (DOCS / "reference" / f"{prog}.rst").read_text(encoding="utf-8")
    assert f".. click-command:: {path}\n   :prog: {prog}\n" in text
    index = (DOCS / "index.rst").read_text(encoding="utf-8")
    assert f"reference/{prog}" in index


@pytest.mark.parametrize(("prog", "path"), sorted(PAGES.items()))
def test_extension_lists_every_option_with_its_environment_variables(prog, path):
    """Every option of the command is listed with all its flags, and every environment
    variable the command reads appears with it, as ``--help`` shows them."""
    command = clickref.load_command(path)
    doc = clickref.describe(command, prog)
    listed = " ".join(option.names for option in doc.options)
    extras = " ".join(extra for option in doc.options for extra in option.extras)
    for param in command.params:
        if isinstance(param, click.Option):
            for flag in [*param.opts, *param.secondary_opts]:
                assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", listed), flag
            envvars = [param.envvar] if isinstance(param.envvar, str) else param.envvar or []
            for name in envvars:
                assert name in extras, (param.name, name)
    assert doc.usage.startswith(f"{prog} [OPTIONS]")


def test_extension_keeps_help_text_plain():
    """Help text is never parsed as reStructuredText: an asterisk stays an asterisk."""

    @click.command()
    @click.option("--origin", help="e.g. https://*.example.com", show_default=True,
                  default="*")
    def tool(origin: str) -> None:
        """Does *things*."""

    nodes = clickref.render(clickref.describe(tool, "tool"))
    text = "".join(node.astext() for node in nodes)
    assert "https://*.example.com" in text and "Does *things*." in text
