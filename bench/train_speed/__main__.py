"""`python -m bench.train_speed [flags]` (see the package's docstring)."""

from bench.train_speed.cli import main

main()
