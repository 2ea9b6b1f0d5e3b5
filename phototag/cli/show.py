"""phototag show PHOTO: everything the library knows about one photo."""

from __future__ import annotations

import typer
from rich.table import Table

from phototag.cli.common import ListFormat, markup_safe, open_library, out, print_json
from phototag.library import photo_as_dict


def register(app: typer.Typer) -> None:
    app.command()(show)


def show(
    ctx: typer.Context,
    photo: str = typer.Argument(..., help="A photo path, #ID, or sha256 prefix.", show_default=False),
    fmt: ListFormat = typer.Option(ListFormat.table, "--format", "-f", help="table or json."),
) -> None:
    """Show a photo's EXIF, status, caption and tags (with score, source and model)."""
    lib = open_library(ctx)
    with lib.session() as session:
        data = photo_as_dict(lib, session, lib.resolve_photo(session, photo))
    if fmt == ListFormat.json:
        print_json(data)
        return
    for key, value in data.items():
        if key != "tags" and value is not None:
            out.print(f"[bold]{key:>16}[/bold]  {markup_safe(str(value))}")
    table = Table("tag", "中文", "score", "source", "model")
    for tag in data["tags"]:
        table.add_row(markup_safe(tag["name"]), markup_safe(tag["name_zh"] or ""),
                      "" if tag["score"] is None else f"{tag['score']:.3f}", tag["source"], markup_safe(tag["model"] or ""))
    out.print(table)
