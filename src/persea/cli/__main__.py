"""`python -m persea.cli`: the same as the `persea` command."""

from persea.cli import main

main()
