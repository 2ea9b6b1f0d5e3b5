"""phototag plugins [list|enable|disable]: list installed plugins (name, version, hooks, enabled) and
turn them on or off in ``[plugins] enabled`` of config.toml (comments and layout are kept)."""

from __future__ import annotations

import os

import typer

from phototag.cli.common import ListFormat, fail, out, print_json

app = typer.Typer(help="List plugins; enable or disable them.")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="plugins")


def _format_option() -> ListFormat:
    return typer.Option(ListFormat.table, "--format", "-f", help="table or json.")


@app.callback(invoke_without_command=True)
def plugins(ctx: typer.Context, fmt: ListFormat = _format_option()) -> None:
    """List plugins: name, version, hooks, enabled.

    A plugin runs automatically only when its name is in plugins.enabled of config.toml
    (`phototag plugins enable NAME`; see docs/plugins.md). Built-in hooks are always active.
    """
    if ctx.invoked_subcommand is None:
        _list(fmt)


@app.command("list")
def list_(fmt: ListFormat = _format_option()) -> None:
    """List plugins: name, version, hooks, enabled (the same as `phototag plugins`)."""
    _list(fmt)


def _list(fmt: ListFormat) -> None:
    from rich.table import Table

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


def _enabled_in_file(settings) -> list[str]:
    """``[plugins] enabled`` as config.toml has it (not as PHOTOTAG_PLUGINS__ENABLED overrides it)."""
    from phototag.config import check_config_text

    if not settings.config_path.exists():
        return []
    values = check_config_text(settings.config_path.read_text(encoding="utf-8"), str(settings.config_path))
    return list(values.get("plugins", {}).get("enabled", []))


def _installed() -> list[str]:
    from phototag.plugins import entry_points

    return [ep.name for ep in entry_points()]


def _save(settings, names: list[str]) -> None:
    settings.set_value("plugins.enabled", names)
    if "PHOTOTAG_PLUGINS__ENABLED" in os.environ:
        typer.secho("note: PHOTOTAG_PLUGINS__ENABLED is set and overrides config.toml", fg="yellow", err=True)


@app.command("enable")
def enable(name: str = typer.Argument(..., help="An installed plugin's name (see `phototag plugins`).")) -> None:
    """Add NAME to plugins.enabled in config.toml: its exporters then run after every scan/watch batch."""
    from phototag.config import get_settings

    installed = _installed()
    if name not in installed:
        fail(f"no installed plugin is called {name!r} (installed: {', '.join(installed) or 'none'})")
    settings = get_settings()
    enabled = _enabled_in_file(settings)
    if name in enabled:
        out.print(f"{name} is already enabled")
        return
    _save(settings, [*enabled, name])
    out.print(f"enabled {name}")


@app.command("disable")
def disable(name: str = typer.Argument(..., help="An enabled plugin's name.")) -> None:
    """Remove NAME from plugins.enabled in config.toml (it stays installed)."""
    from phototag.config import get_settings

    settings = get_settings()
    enabled = _enabled_in_file(settings)
    if name not in enabled:
        installed = _installed()
        if name not in installed:
            fail(f"no installed plugin is called {name!r} (installed: {', '.join(installed) or 'none'})")
        out.print(f"{name} is not enabled")
        return
    _save(settings, [n for n in enabled if n != name])
    out.print(f"disabled {name}")
