"""phototag show PHOTO: everything the library knows about one photo."""

from __future__ import annotations

import os

import typer
from rich.table import Table

from phototag.cli.common import ListFormat, fail, markup_safe, open_library, out, print_json
from phototag.library import LibraryError, photo_as_dict


def register(app: typer.Typer) -> None:
    app.command()(show)


def show(
    ctx: typer.Context,
    photo: str = typer.Argument(..., help="A photo path, #ID, or sha256 prefix.", show_default=False),
    fmt: ListFormat = typer.Option(ListFormat.table, "--format", "-f", help="table or json."),
) -> None:
    """Show a photo's EXIF, status, caption and tags (with score, source and model).

    The table shows exposure as 1/250 s, aperture as f/2.8 and focal length as 4.2 mm; JSON keeps the
    stored numbers (seconds, f-number, millimetres).
    """
    lib = open_library(ctx)
    with lib.session() as session:
        try:
            row = lib.resolve_photo(session, photo)
        except LibraryError:
            _not_found(photo)
            raise
        data = photo_as_dict(lib, session, row)
    if fmt == ListFormat.json:
        print_json(data)
        return
    for key, value in data.items():
        if key != "tags" and value is not None:
            out.print(f"[bold]{key:>16}[/bold]  {markup_safe(_shown(key, value))}")
    if not data["tags"]:
        out.print(f"[bold]{'tags':>16}[/bold]  none")
        return
    table = Table("tag", "中文", "score", "source", "model")
    for tag in data["tags"]:
        table.add_row(markup_safe(tag["name"]), markup_safe(tag["name_zh"] or ""),
                      "" if tag["score"] is None else f"{tag['score']:.3f}", tag["source"], markup_safe(tag["model"] or ""))
    out.print(table)


def _not_found(ref: str) -> None:
    """A reference that names nothing: say which kind of nothing (exit 2). A path that exists but
    is not in the library falls through to the library's own message (scan it first)."""
    if ref.startswith("#") and ref[1:].isdigit():
        fail(f"{ref}: the library has no photo with that id")
    if not os.path.lexists(os.path.expanduser(ref)):
        hexish = len(ref) >= 8 and all(c in "0123456789abcdef" for c in ref.lower())
        fail(f"{ref}: no such file" + (", and no library photo's sha256 starts with it" if hexish else ""))


def _shown(key: str, value: object) -> str:
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
