#!/usr/bin/env python
"""Django's command-line utility for the example chat project.

Run it from anywhere: ``python deploy/example/manage.py migrate``. This
directory is put on ``sys.path`` and on ``PYTHONPATH``, so supervised worker
processes (``runworker --processes N``) import ``chatsite`` and ``chat`` too.
"""

import os
import sys
from pathlib import Path


def main() -> None:
    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:
        sys.path.insert(0, here)
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if here not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([here, *paths])
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
