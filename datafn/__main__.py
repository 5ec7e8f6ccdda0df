"""``python -m datafn`` runs the datafn command line."""

from datafn.cli import main

main()
