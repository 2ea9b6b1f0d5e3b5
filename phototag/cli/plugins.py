"""phototag plugins: list installed plugins, their versions, hooks and whether they are enabled."""

from __future__ import annotations

import typer
from rich.table import Table

from phototag.cli.common import ListFormat, out, print_json


def register(app: typer.Typer) -> None:
    app.command("plugins")(plugins)


def plugins(
    fmt: ListFormat = typer.Option(ListFormat.table, "--format", "-f", help="table or json."),
) -> None:
    """List plugins: name, version, hooks, enabled.

    A plugin is active only when its name is in [plugins] enabled of config.toml
    (see docs/plugins.md). Built-in hooks are always active.
    """
    from phototag.config import get_settings
    from phototag.plugins import list_plugins

    rows = list_plugins(get_settings())
    if fmt == ListFormat.json:
        print_json([r.to_dict() for r in rows])
        return
    table = Table("name", "version", "enabled", "hooks", "module")
    for r in rows:
        enabled = "yes" if r.enabled else ("[red]error[/red]" if r.error else "no")
        table.add_row(r.name, r.version, enabled, ", ".join(r.hooks), r.module + (f"  ({r.error})" if r.error else ""))
    out.print(table)
