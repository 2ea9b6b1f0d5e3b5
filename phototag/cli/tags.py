"""phototag tags: every tag in the library with its photo count."""

from __future__ import annotations

import typer
from rich.table import Column, Table

from phototag.cli.common import ListFormat, markup_safe, open_library, print_json
from phototag.cli.common import print_table


def register(app: typer.Typer) -> None:
    app.command()(tags)


def tags(
    ctx: typer.Context,
    fmt: ListFormat = typer.Option(ListFormat.table, "--format", "-f", help="table or json."),
    limit: int = typer.Option(0, "--limit", "-n", help="Only the N most used tags (0 = all)."),
) -> None:
    """List tags with how many photos carry them, most used first."""
    lib = open_library(ctx)
    with lib.session() as session:
        rows = lib.tag_counts(session)
    if limit:
        rows = rows[:limit]
    if fmt == ListFormat.json:
        print_json(rows)
        return
    table = Table(Column("tag", overflow="fold"), Column("中文", overflow="fold"), Column("parent", overflow="fold"),
                  Column("photos", justify="right"))
    for row in rows:
        table.add_row(markup_safe(row["name"]), markup_safe(row["name_zh"] or ""), markup_safe(row["parent"] or ""),
                      str(row["count"]))
    print_table(table)
