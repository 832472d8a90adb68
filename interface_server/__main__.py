"""``python -m interface_server`` runs the ``interfaceserver`` command."""

from interface_server.cli import main

main()
