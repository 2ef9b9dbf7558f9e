"""Allow ``python -m rtqa``."""

from rtqa.cli import main

main()
