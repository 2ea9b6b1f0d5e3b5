"""phototag export [QUERY]: write tags where photo apps read them (XMP sidecars, digiKam, …)."""

from __future__ import annotations

from typing import List

import typer
from rich.table import Table

from phototag.cli.common import ListFormat, console, markup_safe, open_library, out, print_json


def register(app: typer.Typer) -> None:
    app.command()(export)


def export(
    ctx: typer.Context,
    query: List[str] = typer.Argument(None, help="Which photos (search terms, as for `phototag search`); "
                                      "none = every photo.", show_default=False),
    to: List[str] = typer.Option(None, "--to", "-t", help="Exporter name (xmp, digikam, …; any installed "
                                 "one); repeat for several. Default: every exporter of the enabled plugins.", show_default=False),
    dry_run: bool = typer.Option(False, "--dry-run", "-n", help="Say what would be written; write nothing."),
    force: bool = typer.Option(False, "--force", help="Write even photos whose tags did not change since the last export."),
    fmt: ListFormat = typer.Option(ListFormat.table, "--format", "-f", help="table or json."),
) -> None:
    """Write the library's tags to sidecars or other apps (exporters come from plugins).

    phototag's tags go under one root keyword (default "phototag/…"), so a re-export replaces only
    what phototag wrote; your own keywords and other tools' data stay. Photos whose tags did not
    change since the last export are skipped. Exits 1 when a photo failed.
    """
    from phototag.export.service import export_photos, resolve_exporters

    lib = open_library(ctx)
    exporters = resolve_exporters(list(to) if to else None, lib.settings)
    if not exporters:
        console.print("no exporter is enabled: name one, e.g. `phototag export --to xmp`, or enable one in "
                      "config.toml ([plugins] enabled = [\"xmp\"]) to export by default and after tagging "
                      "(`phototag plugins` lists the installed ones)")
        raise typer.Exit(2)
    photo_ids = None
    if query:
        from phototag.query.service import parse_query, search_ids

        with lib.session() as session:
            photo_ids = search_ids(session, parse_query(list(query)))
    report = export_photos(lib, photo_ids, exporters, dry_run=dry_run, force=force, settings=lib.settings)
    if fmt == ListFormat.json:
        print_json(report.to_dict())
    else:
        shown = [r for r in report.results if r.action != "unchanged"]
        if shown:
            table = Table("exporter", "photo", "action", "target", "detail")
            for r in shown[:200]:
                table.add_row(r.exporter, markup_safe(r.path), r.action, markup_safe(r.target or ""),
                              markup_safe(r.detail))
            out.print(table)
            if len(shown) > 200:
                console.print(f"… and {len(shown) - 200} more (use --format json for all)")
        counts = ", ".join(f"{n} {action}" for action, n in sorted(report.counts().items())) or "nothing to export"
        console.print(("[yellow]dry run:[/yellow] " if dry_run else "") + counts)
    if report.failed:
        raise typer.Exit(1)
