"""Tests of clef_core.training."""
