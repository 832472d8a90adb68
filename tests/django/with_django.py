"""Run the Django integration tests against another Django release, in a throwaway venv.

Usage (from the repository root)::

    .venv/bin/python tests/django/with_django.py 4.2            # tests/django -q
    .venv/bin/python tests/django/with_django.py 4.2 -x -k ordering

How it works: a venv in ``$TMPDIR/switchboard-django-<series>`` (made once, then
reused) gets only ``Django~=<series>.0`` from the package index; a ``.pth`` file
adds this project's ``.venv`` site-packages *after* its own, so every other
dependency (and the editable ``switchboard``) comes from ``.venv`` while the
other Django shadows the one installed there. The console scripts the tests
start (``interfaceserver``, ``runworker`` ...) are written into its ``bin``.
Then ``python -m pytest tests/django`` runs with that interpreter.

Not part of the default test run: the first call downloads Django. Django 6.0
needs Python 3.12 or later.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import tempfile
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def make_venv(series: str) -> Path:
    venv = Path(tempfile.gettempdir()) / f"switchboard-django-{series}"
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    probe = subprocess.run([str(python), "-c", "import sysconfig; "
                            "print(sysconfig.get_paths()['purelib'])"],
                           check=True, capture_output=True, text=True)
    own = Path(probe.stdout.strip())
    here = sysconfig.get_paths()["purelib"]  # this project's .venv site-packages
    (own / "zz_switchboard_venv.pth").write_text(
        f"import site; site.addsitedir({here!r})\n")
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps",
                    f"Django~={series}.0"], check=True)
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    for name, target in scripts.items():
        module, _, function = target.partition(":")
        script = venv / "bin" / name
        script.write_text(f"#!{python}\nimport sys\nfrom {module} import {function}\n"
                          f"sys.exit({function}())\n")
        script.chmod(0o755)
    return python


def main(argv: list[str]) -> int:
    if not argv or argv[0].startswith("-"):
        print(__doc__)
        return 2
    series, pytest_args = argv[0], argv[1:] or ["-q"]
    python = make_venv(series)
    version = subprocess.run([str(python), "-c", "import django; print(django.get_version())"],
                             check=True, capture_output=True, text=True).stdout.strip()
    print(f"Django {version} ({python})", flush=True)
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    return subprocess.run([str(python), "-m", "pytest", "tests/django", "-p",
                           "no:cacheprovider", *pytest_args], cwd=REPO, env=env).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
