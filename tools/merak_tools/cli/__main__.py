"""`python -m merak_tools.cli`: the `merak` program."""

from merak_tools.cli import run

run()
