"""What every command shares: the library of the current ``--home``, output formats, errors."""

from __future__ import annotations

import json
import sys
from enum import Enum
from typing import Any, Iterable

import typer
from rich.console import Console

from phototag.config import get_settings
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
        lib = Library(get_settings())
        obj["library"] = lib
        if ctx is not None:
            ctx.call_on_close(lib.close)
    return lib


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2, default=str) + "\n")


def fail(message: str, code: int = 2) -> None:
    console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code)


def paths_output(paths: Iterable[str], print0: bool = False) -> None:
    sep = "\0" if print0 else "\n"
    for p in paths:
        sys.stdout.write(p + sep)
