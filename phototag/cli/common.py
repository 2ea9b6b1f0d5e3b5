"""What every command shares: the library of the current ``--home``, output formats, errors, and
what several commands show the same way (a progress bar, a photo's tag table, the agreement table)
or do after tagging (the after-commit hook), so that no command imports another one's private helper.
rich's progress and table modules are imported when a command draws one."""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
from enum import Enum
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping

import typer
from rich.console import Console

from phototag.config import get_settings
from phototag.display import escape_char, printable

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
    message = _LONE_SURROGATE.sub(escape_char, message)
    console.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)  # one line, never folded mid-path
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


def after_commit_hook(lib: Library):
    """The ``on_commit`` callback of the commands that tag (scan, watch, retag): after each committed
    batch the plugins hear which photos have new tags (automatic XMP export writes their sidecars);
    a plugin's error is shown and the work goes on."""

    def on_commit(photo_ids: list[int]) -> None:
        tell_plugins(lib, photo_ids)

    return on_commit


def tell_plugins(lib: Library, photo_ids: list[int]) -> None:
    """Run the plugins' ``photos_tagged`` hooks for ``photo_ids`` now, showing each plugin error
    (``tag add``/``tag remove`` call it once their change is committed)."""
    from phototag.plugins import photos_tagged

    for error in photos_tagged(lib, photo_ids):
        console.print(f"[yellow]plugin:[/yellow] {error}")


# ---- shown the same way by several commands -----------------------------------------------------

ProgressFn = Callable[[str, int], None]  # (event, n): "total" sets the count, "advance" moves on


@contextlib.contextmanager
def progress_bar(label: str, *, disable: bool = False, eta: bool = True) -> Iterator[ProgressFn]:
    """A bar on stderr for the duration of the block; yields the ``progress(event, n)`` callback the
    services take (``"total"``: how many there are, once known; ``"advance"``: n more done).
    ``disable`` (``--quiet``, ``--format json``) draws nothing; ``eta`` adds the time remaining."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns: list[Any] = [TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn()]
    if eta:
        columns.append(TimeRemainingColumn())
    with Progress(*columns, console=console, disable=disable, transient=False) as bar:
        task = bar.add_task(label, total=None)

        def progress(event: str, n: int) -> None:
            if event == "total":
                bar.update(task, total=n)
            else:
                bar.advance(task, n)

        yield progress


def tag_table(tags: Iterable[Mapping[str, Any]], *, title: str | None = None, chinese: bool = True):
    """A photo's tags (the dicts of :meth:`phototag.library.Library.photo_tags`) as a rich table:
    name (and Chinese name), score, source, model. Names are shown escaped, never as markup."""
    from rich.table import Table

    table = Table("tag", *(["中文"] if chinese else []), "score", "source", "model",
                  title=None if title is None else markup_safe(title))
    for tag in tags:
        score = "" if tag.get("score") is None else f"{tag['score']:.3f}"
        row = [markup_safe(tag["name"])]
        if chinese:
            row.append(markup_safe(tag.get("name_zh") or ""))
        table.add_row(*row, score, tag["source"], markup_safe(tag.get("model") or ""))
    return table


def agreement_table(before: Any, after: Any, photos: int) -> None:
    """Print how well the tags agree with the user's corrections on held-out photos, before and
    after a calibration or a fine-tune (:class:`phototag.learn.corrections.Agreement`)."""
    from rich.table import Table

    table = Table("held-out", "precision", "recall", "F1", title=f"agreement with you on {photos} held-out photos")
    for label, a in (("before", before), ("after", after)):
        table.add_row(label, f"{a.precision:.3f}", f"{a.recall:.3f}", f"{a.f1:.3f}")
    out.print(table)


def print_table(table) -> None:
    """On a terminal the table fills its width (the path column gets the most); into a pipe or
    a file it is as wide as its rows need, so that no path is folded (rich would assume 80
    columns there)."""
    from rich.console import Console
    from rich.measure import Measurement

    if out.is_terminal:
        table.expand = True  # the columns' ratios share the width only in an expanded table
        out.print(table)
        return
    width = Measurement.get(out, out.options.update(width=100_000), table).maximum
    Console(highlight=False, soft_wrap=True, width=max(out.width, width)).print(table)
