"""phototag similar PHOTO: the photos that look most like PHOTO (library photo or any image)."""

from __future__ import annotations

from typing import Optional

import typer
from rich.table import Column, Table

from phototag.cli.common import Format, console, fail, markup_safe, open_library, paths_output, print_json


def register(app: typer.Typer) -> None:
    app.command()(similar)


def similar(
    ctx: typer.Context,
    photo: str = typer.Argument(
        ..., help="A photo of the library (path, #id or sha256 prefix) or any image file.", show_default=False
    ),
    limit: int = typer.Option(20, "--limit", "-n", min=1, help="How many photos to show."),
    fmt: Format = typer.Option(Format.paths, "--format", "-f", help="paths (one per line), table, or json."),
    model: Optional[str] = typer.Option(
        None, "--model", "-m",
        help="Whose embeddings to compare: a model name or model id (default: the model with the most embeddings).",
    ),
    print0: bool = typer.Option(False, "--print0", "-0", help="Separate paths with NUL (for xargs -0)."),
) -> None:
    """Show the photos that look most like PHOTO, most similar first.

    Uses the embeddings the tagging model stored for each photo. A photo outside the library is
    embedded with the same model first. The search index under <home>/index is built on first use
    and kept in step with the library automatically (`phototag index rebuild` forces it).
    """
    from phototag.search import SearchError
    from phototag.search.service import find_similar

    lib = open_library(ctx)
    try:
        with lib.session() as session:
            hits = find_similar(lib, session, photo, limit=limit, model=model,
                                progress=lambda msg: console.print(f"[dim]{msg}[/dim]"))
    except SearchError as exc:
        fail(str(exc))
    if not hits:
        raise typer.Exit(1)
    if fmt == Format.paths:
        paths_output((h.path for h in hits), print0)
    elif fmt == Format.json:
        print_json([h.as_dict() for h in hits])
    else:
        from phototag.cli.common import print_table

        # a path is never cut short: it gets the room left, and folds only on a narrow terminal
        table = Table(Column("#", justify="right", style="dim"), Column("score", justify="right"),
                      Column("id", justify="right", style="dim"), Column("path", overflow="fold", ratio=1),
                      show_edge=False, pad_edge=False)
        for rank, h in enumerate(hits, 1):
            table.add_row(str(rank), f"{h.score:.3f}", str(h.photo_id), markup_safe(h.path))
        print_table(table)
