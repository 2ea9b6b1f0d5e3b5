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


def shown_value(key: str, value: object) -> str:
    """A value as a person reads it: 1/121 s, f/2.8, 4.2 mm (JSON keeps the numbers)."""
    if key == "exposure_time" and isinstance(value, (int, float)) and value > 0:
        return exposure(value)
    if key == "f_number" and isinstance(value, (int, float)) and value > 0:
        return f"f/{round(value, 1):g}"
    if key == "focal_length" and isinstance(value, (int, float)) and value > 0:
        return f"{round(value, 1):g} mm"
    if key == "size" and isinstance(value, int):
        return f"{value:,} bytes"
    return str(value)


def exposure(seconds: float) -> str:
    """0.008264… → ``1/121 s``, 0.5 → ``1/2 s``, 0.3 → ``0.3 s``, 2.5 → ``2.5 s`` (cameras write
    short exposures as 1/N of a second)."""
    if seconds >= 1:
        return f"{round(seconds, 1):g} s"
    n = 1 / seconds
    if seconds < 0.25 or abs(n - round(n)) < 0.02 * n:
        return f"1/{round(n)} s"
    return f"{round(seconds, 2):g} s"
