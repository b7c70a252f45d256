"""Synthetic face-video generator that writes the real datasets' layouts (the embedded default)."""
