"""Tests of clef_core.method."""
