"""``python -m squall.cli``."""

from squall.cli import main

main()
