"""Sphinx configuration for the Switchboard documentation.

Build with ``make docs`` (warnings are errors). The build needs no network:
no intersphinx inventories are fetched.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Make the top-level packages importable for autodoc without installing them.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
# Local extensions: clickref renders the CLI reference from the click commands.
sys.path.insert(0, str(Path(__file__).resolve().parent / "_ext"))

project = "Switchboard"
author = "The Switchboard developers"
copyright = "the Switchboard developers"

extensions = [
    "sphinx.ext.autodoc",
    "myst_parser",  # only to include ../CHANGELOG.md in changelog.rst
    "clickref",  # .. click-command:: module:attr (docs/_ext/clickref.py)
]

# Pages are reStructuredText. Markdown files are read only where an
# ``.. include::`` asks for them with the MyST parser.
source_suffix = {".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "benchmarks/*.md"]

nitpicky = False
highlight_language = "python"
myst_heading_anchors = 3

html_theme = "furo"
html_title = "Switchboard"
html_static_path: list[str] = []
