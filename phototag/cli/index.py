"""phototag index rebuild|status: the similar-photo search index (a cache of the database)."""

from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table

from phototag.cli.common import ListFormat, console, fail, open_library, out, print_json

app = typer.Typer(
    help="The similar-photo search index: a cache of the stored embeddings, kept in step automatically.",
    no_args_is_help=True,
)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="index")


def _render(reports, fmt: ListFormat, timing: bool) -> None:
    if fmt == ListFormat.json:
        print_json([r.as_dict() for r in reports])
        return
    if not reports:
        out.print("no photo has an embedding yet: nothing to index")
        return
    table = Table(show_edge=False, pad_edge=False)
    for col in ("model", "kind", "photos", "dim", "size", "seconds" if timing else "in step", "file"):
        table.add_column(col, justify="right" if col in ("photos", "dim", "size", "seconds") else "left")
    for r in reports:
        table.add_row(
            r.model_id, r.kind, f"{r.photos:,}", str(r.dim or "-"), f"{r.bytes / 2**20:.1f} MiB",
            f"{r.seconds:.1f}" if timing else ("yes" if r.in_step else "no (updated on next use)"), r.path,
        )
    out.print(table)


@app.command()
def rebuild(
    ctx: typer.Context,
    model: Optional[str] = typer.Option(
        None, "--model", "-m", help="Only this model (name or model id); default: every model with embeddings."
    ),
    fmt: ListFormat = typer.Option(ListFormat.table, "--format", "-f"),
) -> None:
    """Throw the index away and build it again from the embeddings in the database."""
    from phototag.search import SearchError
    from phototag.search.service import rebuild_indexes

    lib = open_library(ctx)
    try:
        reports = rebuild_indexes(
            lib, model, progress=None if fmt == ListFormat.json else (lambda m: console.print(f"[dim]{m}[/dim]"))
        )
    except SearchError as exc:
        fail(str(exc))
    _render(reports, fmt, timing=True)


@app.command()
def status(
    ctx: typer.Context,
    fmt: ListFormat = typer.Option(ListFormat.table, "--format", "-f"),
) -> None:
    """Show each model's index: its size, and whether it is in step with the database."""
    from phototag.search.service import index_status

    _render(index_status(open_library(ctx)), fmt, timing=False)
