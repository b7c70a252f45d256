"""User-facing errors: one sentence saying what was expected and what was found.

Entry points print these as a single line and exit non-zero; any other exception is a bug
and keeps its traceback.
"""


class ClefError(Exception):
    """An error caused by the user's input, not by a bug."""


class ConfigError(ClefError):
    """A config value, preset name or override that is not allowed."""
