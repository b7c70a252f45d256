"""Tests of the flows package (CLI, stack, end to end)."""
