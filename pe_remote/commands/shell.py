"""Remote shell composed from words: every value is quoted by construction.

`q` quotes one word, `join` an argv. Commands for the master are built from these, never by
pasting a value into a string.
"""

from __future__ import annotations

import shlex


def q(value: str) -> str:
    """One shell word, whatever `value` holds."""
    return shlex.quote(str(value))


def join(argv: list[str] | tuple[str, ...]) -> str:
    """A command from its argv."""
    return shlex.join([str(word) for word in argv])
