"""phototag show PHOTO: everything the library knows about one photo."""

from __future__ import annotations

import os

import typer
from rich.table import Table

from phototag.cli.common import ListFormat, fail, markup_safe, open_library, out, print_json
from phototag.display import shown_value
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
            out.print(f"[bold]{key:>16}[/bold]  {markup_safe(shown_value(key, value))}")
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
