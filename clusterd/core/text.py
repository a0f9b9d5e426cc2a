"""Text from other parties, made safe to show: no terminal escapes, no forged lines.

Host names from join requests, reasons in a peer's goodbye, user names, command lines:
everything that reaches a log line or an admin's terminal may carry control characters
that move the cursor, retitle the window, or start a new, forged log line.  ``printable``
writes each such character as a visible escape (``\\x1b``, ``\\u202e``); the log
formatter and every shell console apply it, so no output path is left out.

>>> printable("evil\\x1b]0;pwned\\x07\\nALERT fake")
'evil\\\\x1b]0;pwned\\\\x07\\\\nALERT fake'
>>> printable("two\\nlines", keep_newlines=True)
'two\\nlines'
"""

from __future__ import annotations

import re

# C0 controls but tab, DEL, C1 controls, and the Unicode controls that reorder or hide
# text (bidirectional overrides and isolates, line and paragraph separators).
_UNSAFE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_UNSAFE_BUT_NEWLINE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` with every control character written as a visible escape."""
    pattern = _UNSAFE_BUT_NEWLINE if keep_newlines else _UNSAFE
    return pattern.sub(_escape, text)
