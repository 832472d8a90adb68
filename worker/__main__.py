"""``python -m worker`` is ``runworker``."""

from worker.cli import main

main()
