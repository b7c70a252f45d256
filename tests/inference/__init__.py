"""Tests of clef_core.inference."""
