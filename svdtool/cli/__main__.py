"""`python -m svdtool.cli` runs the `svdtool` command."""

from . import main

main()
