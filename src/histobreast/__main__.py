"""``python -m histobreast`` runs the command-line program."""

from histobreast.cli import main

main()
