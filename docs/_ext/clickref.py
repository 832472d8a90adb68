"""A tiny Sphinx extension: the reference of a click command, read from the command itself.

Usage in a page::

    .. click-command:: interface_server.cli:main
       :prog: interfaceserver

It renders the command's help text, its usage line, its arguments and, for
every option, the option strings, the help text, the default and the
environment variables -- exactly what ``--help`` prints, because it asks
click for the same records (``Parameter.get_help_record``). The pages
therefore cannot drift from the code: a new option appears at the next build.
Help texts are shown as plain text, never parsed as reStructuredText.
"""

from __future__ import annotations

import importlib
import inspect
import re
from dataclasses import dataclass
from typing import Any

import click
from docutils import nodes
from docutils.parsers.rst import directives
from sphinx.util.docutils import SphinxDirective

_BRACKETS = re.compile(r"\s*\[([^\[\]]*)\]\s*$")


@dataclass
class OptionDoc:
    """One option as ``--help`` describes it."""

    names: str            # "-p, --port INTEGER RANGE"
    help: str             # the help text without the bracketed extras
    extras: list[str]     # "env var: PORT", "default: 8000", ...


@dataclass
class CommandDoc:
    prog: str
    usage: str
    help: str
    arguments: list[str]
    options: list[OptionDoc]


def load_command(path: str) -> click.Command:
    """The click command at ``module:attribute``."""
    module_name, _, attribute = path.partition(":")
    command = getattr(importlib.import_module(module_name), attribute)
    if not isinstance(command, click.Command):
        raise TypeError(f"{path} is not a click command (got {type(command).__name__})")
    return command


def describe(command: click.Command, prog: str) -> CommandDoc:
    """What ``prog --help`` says, as data."""
    # As ``prog --help`` would: the command's context_settings (show_default ...) apply.
    context = command.context_class(command, info_name=prog, **command.context_settings)
    usage = " ".join([prog, *command.collect_usage_pieces(context)])
    arguments, options = [], []
    for param in command.get_params(context):
        if isinstance(param, click.Argument):
            arguments.append(param.make_metavar(context) if _takes_context(param)
                             else param.make_metavar())
            continue
        record = param.get_help_record(context)
        if record is None:
            continue
        names, text = record
        extras: list[str] = []
        found = _BRACKETS.search(text)
        if found:
            extras = [part.strip() for part in found.group(1).split(";") if part.strip()]
            text = text[:found.start()]
        options.append(OptionDoc(names, " ".join(text.split()), extras))
    help_text = (command.help or "").replace("\b\n", "")
    return CommandDoc(prog, usage, help_text, arguments, options)


def _takes_context(param: click.Parameter) -> bool:
    return "ctx" in inspect.signature(param.make_metavar).parameters


class ClickCommand(SphinxDirective):
    """``.. click-command:: module:attr`` with ``:prog: name``."""

    required_arguments = 1
    option_spec = {"prog": directives.unchanged_required}

    def run(self) -> list[nodes.Node]:
        path = self.arguments[0]
        try:
            command = load_command(path)
        except (ImportError, AttributeError, TypeError) as exc:
            raise self.error(f"click-command: cannot load {path}: {exc}") from None
        doc = describe(command, self.options.get("prog") or command.name or path)
        return render(doc)


def _paragraphs(text: str) -> list[nodes.Node]:
    return [nodes.paragraph(text=" ".join(block.split()))
            for block in re.split(r"\n\s*\n", text.strip()) if block.strip()]


def render(doc: CommandDoc) -> list[nodes.Node]:
    result: list[nodes.Node] = [*_paragraphs(doc.help)]
    result.append(nodes.literal_block(doc.usage, doc.usage, language="none"))
    if doc.arguments:
        para = nodes.paragraph()
        para += nodes.strong(text="Arguments: ")
        for index, argument in enumerate(doc.arguments):
            if index:
                para += nodes.Text(", ")
            para += nodes.literal(text=argument)
        result.append(para)
    items = nodes.definition_list(classes=["click-options"])
    for option in doc.options:
        item = nodes.definition_list_item()
        term = nodes.term()
        term += nodes.literal(text=option.names)
        item += term
        definition = nodes.definition()
        if option.help:
            definition += nodes.paragraph(text=option.help)
        if option.extras:
            extras = nodes.bullet_list()
            for extra in option.extras:
                label, _, value = extra.partition(":")
                entry = nodes.paragraph()
                if value:
                    entry += nodes.emphasis(text=f"{label.strip()}: ")
                    entry += nodes.literal(text=value.strip())
                else:
                    entry += nodes.Text(extra)
                extras += nodes.list_item("", entry)
            definition += extras
        item += definition
        items += item
    result.append(items)
    return result


def setup(app: Any) -> dict[str, Any]:
    app.add_directive("click-command", ClickCommand)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
