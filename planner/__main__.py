"""`python -m planner` runs the agiplan CLI."""

from planner.cli import main

main()
