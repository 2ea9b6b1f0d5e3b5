"""How text from the library (file names, tag names, messages) is shown to a person: on a terminal
line or a web page. No imports beyond the standard library, so the CLI and the web app both use it
cheaply."""

from __future__ import annotations

import re

_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def escape_char(match: re.Match) -> str:
    """The escape :func:`printable` shows for the one character ``match`` matched."""
    ch = match.group()
    code = ord(ch)
    if ch in _NAMED_ESCAPES:
        return _NAMED_ESCAPES[ch]
    if 0xDC80 <= code <= 0xDCFF:  # a byte of a file name that is not UTF-8 (os.fsdecode's surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}"


def printable(text: str) -> str:
    """``text`` as a person can read it on one terminal line: a byte of a file name that is not
    valid UTF-8 shows as ``\\xe9``, a newline as ``\\n``, other control characters as ``\\xNN``.
    Everything else (accents, CJK, emoji, backslashes) is shown as it is. For reading, not parsing:
    scripts use ``--format json`` or ``--print0``."""
    return _UNPRINTABLE.sub(escape_char, text) if _UNPRINTABLE.search(text) else text
