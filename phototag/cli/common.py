"""What every command shares: the library of the current ``--home``, output formats, errors."""

from __future__ import annotations

import json
import os
import re
import sys
from enum import Enum
from typing import TYPE_CHECKING, Any, Iterable

import typer
from rich.console import Console

from phototag.config import get_settings

if TYPE_CHECKING:  # the library (sqlalchemy, numpy) is imported when a command opens it
    from phototag.library import Library

console = Console(stderr=True)
out = Console(highlight=False, soft_wrap=True)


class Format(str, Enum):
    paths = "paths"
    table = "table"
    json = "json"


class ListFormat(str, Enum):
    table = "table"
    json = "json"


def open_library(ctx: typer.Context | None = None) -> Library:
    """The library of the current ``--home`` (opened once per command, upgraded if needed)."""
    obj = ctx.ensure_object(dict) if ctx is not None else {}
    lib = obj.get("library")
    if lib is None:
        from phototag.library import Library

        lib = Library(get_settings())
        obj["library"] = lib
        if ctx is not None:
            ctx.call_on_close(lib.close)
    return lib


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_char(match: re.Match) -> str:
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
    return _UNPRINTABLE.sub(_escape_char, text) if _UNPRINTABLE.search(text) else text


def markup_safe(text: str) -> str:
    """:func:`printable` text to put into rich markup (``[...]`` in a file name is not a style)."""
    from rich.markup import escape

    return escape(printable(text))


def print_json(data: Any) -> None:
    """JSON on stdout, non-ASCII text as it is. A file name that is not valid UTF-8 is written with
    ``\\udcXX`` escapes for its undecodable bytes (Python's surrogateescape, PEP 383):
    ``json.loads`` then ``os.fsencode`` give back the exact bytes; parsers that refuse lone
    surrogates show a replacement character instead (use ``--print0`` for the raw bytes)."""
    text = json.dumps(data, ensure_ascii=False, indent=2, default=str)
    # a lone surrogate can only be inside a JSON string, where its \u escape is valid JSON
    text = _LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
    sys.stdout.write(text + "\n")


def fail(message: str, code: int = 2) -> None:
    from rich.markup import escape

    # a message may quote any file name: its undecodable bytes escaped, its brackets not markup
    message = _LONE_SURROGATE.sub(_escape_char, message)
    console.print(f"[red]error:[/red] {escape(message)}")
    raise typer.Exit(code)


def paths_output(paths: Iterable[str], print0: bool = False) -> None:
    """One path per line, :func:`printable` (a name with a newline stays on its line); with
    ``print0`` the file system's exact bytes, each followed by NUL, for ``xargs -0``."""
    if print0:
        sys.stdout.flush()
        for p in paths:
            sys.stdout.buffer.write(os.fsencode(p) + b"\0")
        sys.stdout.buffer.flush()
        return
    for p in paths:
        sys.stdout.write(printable(p) + "\n")
