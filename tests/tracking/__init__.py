"""Tests of clef_core.tracking."""
