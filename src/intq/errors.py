"""User-facing errors: one line that says what was wrong and what to do."""

import unicodedata

__all__ = ["IntqError", "UsageError", "printable"]

_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


class IntqError(Exception):
    """A failure caused by the user's input or environment (CLI exit code 1, no traceback)."""


class UsageError(IntqError):
    """A wrong command line, flag combination or argument (CLI exit code 2)."""


def printable(text: str) -> str:
    """``text`` on one line: control and format characters (newlines, ANSI escapes, bidi
    overrides) and unencodable surrogates become backslash escapes, so names from user data
    cannot start a second, fake line or recolour the terminal."""
    return "".join(_escape(c) if _unprintable(c) else c for c in text)


def _unprintable(c: str) -> bool:
    return unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp")


def _escape(c: str) -> str:
    if c in _ESCAPES:
        return _ESCAPES[c]
    code = ord(c)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
