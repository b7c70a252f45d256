"""Tests of the preprocessing package."""
