"""`python -m bench.gpu_train [flags]` (see the package's docstring)."""

from bench.gpu_train.cli import main

main()
