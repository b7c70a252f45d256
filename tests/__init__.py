"""The test suite: one module per package area (see each module's docstring)."""
