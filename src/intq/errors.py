"""User-facing errors: one line that says what was wrong and what to do."""

__all__ = ["IntqError", "UsageError"]


class IntqError(Exception):
    """A failure caused by the user's input or environment (CLI exit code 1, no traceback)."""


class UsageError(IntqError):
    """A wrong command line, flag combination or argument (CLI exit code 2)."""
