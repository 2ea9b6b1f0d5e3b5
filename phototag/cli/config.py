"""phototag config path|show|get|set|unset|edit: read and change the settings of the library home.

Writes go through :mod:`phototag.config`: every value is checked against the schema first (a wrong
one is refused and the file is not touched), the user's comments and layout are kept, and the
file is replaced atomically. See docs/configuration.md.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
from enum import Enum
from pathlib import Path
from typing import Any

import typer

app = typer.Typer(help="Show and change settings (config.toml of the library home).", no_args_is_help=True)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="config")


class ShowFormat(str, Enum):
    toml = "toml"
    json = "json"


def _error(message: Any) -> None:
    from phototag.cli import show_user_error

    show_user_error(message)
    raise typer.Exit(2)


def _settings(ctx: typer.Context, need_valid: bool = True):
    """The settings of --home; with ``need_valid`` the problems of config.toml/env end the command."""
    from phototag.config import get_settings

    problem = ctx.obj.get("config_error") if isinstance(ctx.obj, dict) else None  # set by the root callback
    if problem is not None and need_valid:
        _error(f"{problem} (fix it with `phototag config set` or `phototag config edit`)")
    return get_settings(), problem


def _text(value: Any) -> str:
    """A value for `config get`: strings bare (for scripts), everything else as TOML writes it."""
    from phototag.config import show_value

    return value if isinstance(value, str) else show_value(value)


@app.command("path")
def path_(ctx: typer.Context) -> None:
    """Print where config.toml is (it may not exist yet: every setting then has its default)."""
    settings, _ = _settings(ctx, need_valid=False)
    typer.echo(str(settings.config_path))


@app.command("show")
def show(
    ctx: typer.Context,
    fmt: ShowFormat = typer.Option(ShowFormat.toml, "--format", "-f", help="toml (with where each value comes "
                                   "from) or json."),
) -> None:
    """Print the effective settings: defaults, then config.toml, then PHOTOTAG_* variables."""
    from phototag.config import SCHEMA, TABLES, show_value

    settings, _ = _settings(ctx)
    if fmt == ShowFormat.json:
        sys.stdout.write(json.dumps(settings.data, ensure_ascii=False, indent=2) + "\n")
        return
    table = None
    for spec in SCHEMA:
        parent, _, name = spec.key.rpartition(".")
        if parent != table:
            typer.echo(f"\n[{parent}]" if parent else "", nl=bool(parent))
            table = parent
        value = settings.get(spec.key)
        source = settings.source(spec.key)
        where = "" if source == "default" else f"  # from {source}"
        if value is None:
            typer.echo(f"# {name} is unset{where}")
        else:
            typer.echo(f"{name} = {show_value(value)}{where}")
    for name, table_value in sorted(settings.section("plugins").items()):
        if isinstance(table_value, dict) and f"plugins.{name}" not in TABLES:
            typer.echo(f"\n[plugins.{name}]  # a third-party plugin's table")
            for key, value in table_value.items():
                typer.echo(f"{key} = {show_value(value)}")


@app.command("get")
def get(ctx: typer.Context, key: str = typer.Argument(..., help="A dotted key, e.g. watch.stable_seconds, "
                                                        "or a table, e.g. watch.")) -> None:
    """Print one setting's effective value (a table prints its settings). Exit 1 when it is unset."""
    from phototag.config import SETTINGS, TABLES, ConfigError, setting, show_value

    settings, _ = _settings(ctx)
    if key in TABLES or (key.startswith("plugins.") and isinstance(settings.get(key), dict)):
        for name, value in settings.section(key).items():
            if not isinstance(value, dict) and value is not None:
                typer.echo(f"{name} = {show_value(value)}")
        return
    if key not in SETTINGS and not _third_party(key):
        try:
            setting(key)
        except ConfigError as exc:
            _error(exc)
    value = settings.get(key)
    if value is None:
        raise typer.Exit(1)
    typer.echo(_text(value))


def _third_party(key: str) -> bool:
    from phototag.config import is_third_party_key

    return is_third_party_key(key)


def _write(ctx: typer.Context, key: str, value: Any) -> None:
    from phototag.config import ConfigError, load_settings

    settings, _ = _settings(ctx, need_valid=False)
    try:
        settings.set_value(key, value)
    except ConfigError as exc:
        _error(f"{exc}; {settings.config_path} was not changed")
    try:
        load_settings(settings.home)
    except ConfigError as exc:  # the value is saved, but something else is still wrong
        _error(f"saved {key}, but the settings still have a problem:\n{exc}")
    env = f"PHOTOTAG_{key.replace('.', '__').upper()}"
    if env in os.environ:
        typer.secho(f"note: {env} is set and overrides config.toml", fg="yellow", err=True)


@app.command("set")
def set_(
    ctx: typer.Context,
    key: str = typer.Argument(..., help="A dotted key, e.g. watch.stable_seconds."),
    value: str = typer.Argument(..., help="The value, read as the setting's type: 5, true, ram_plus, "
                                "'[\".jpg\", \".png\"]' or .jpg,.png for a list; none unsets an optional one."),
) -> None:
    """Check VALUE and write it into config.toml (comments and layout are kept)."""
    from phototag.config import ConfigError, parse_value

    if _third_party(key):
        import tomllib

        try:
            parsed: Any = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            parsed = value
    else:
        try:
            parsed = parse_value(key, value)
        except ConfigError as exc:
            _error(f"{exc}; nothing was changed")
    _write(ctx, key, parsed)
    typer.echo(f"{key} = {_text(parsed) if parsed is not None else '(unset)'}")


@app.command("unset")
def unset(ctx: typer.Context, key: str = typer.Argument(..., help="A dotted key, e.g. batch_size.")) -> None:
    """Remove KEY from config.toml: it goes back to its default."""
    from phototag.config import SETTINGS, ConfigError, set_in_config, setting, show_value

    settings, _ = _settings(ctx, need_valid=False)
    if not _third_party(key):
        try:
            setting(key)
        except ConfigError as exc:
            _error(exc)
    try:
        set_in_config(settings.config_path, key, None)
    except ConfigError as exc:
        _error(exc)
    default = SETTINGS[key].default if key in SETTINGS else None
    typer.echo(f"{key} is back to its default" + (f" ({show_value(default)})" if default is not None else ""))


def _editor() -> list[str]:
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or ("notepad" if os.name == "nt" else "vi")
    return shlex.split(editor)


def template() -> str:
    """A new config.toml: every setting, commented out at its default, with its doc."""
    from phototag.config import SCHEMA, show_value

    lines = ["# phototag settings. Uncomment a line to change it; docs/configuration.md lists them all.", ""]
    table = None
    for spec in SCHEMA:
        parent, _, name = spec.key.rpartition(".")
        if parent != table:
            if parent:
                lines += ["", f"# [{parent}]"]
            table = parent
        lines.append(f"# {spec.doc}")
        lines.append(f"# {name} = {show_value(spec.default)}" if spec.default is not None
                     else f"# {name} is unset by default")
    return "\n".join(lines) + "\n"


@app.command("edit")
def edit(ctx: typer.Context) -> None:
    """Open config.toml in $VISUAL / $EDITOR; the edit is saved only once it is valid.

    You edit a copy; when it has a mistake you are told what is wrong and may edit it again. If
    you stop, config.toml stays as it was and your edit is kept beside it.
    """
    from phototag.config import ConfigError, check_config_text, write_config_text

    settings, _ = _settings(ctx, need_valid=False)
    path = settings.config_path
    original = path.read_text(encoding="utf-8") if path.exists() else None
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=".config.edit-", suffix=".toml")
    draft = Path(name)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(original if original is not None else template())
    while True:
        command = [*_editor(), str(draft)]
        try:
            code = subprocess.call(command)
        except OSError as exc:
            draft.unlink()
            _error(f"cannot start the editor {command[0]!r} ({exc}); set $EDITOR")
        text = draft.read_text(encoding="utf-8")
        if code != 0:
            _error(f"the editor exited with status {code}; {path} was not changed (your edit is in {draft})")
        if text == original or (original is None and text == template()):
            draft.unlink()
            typer.echo(f"{path} unchanged")
            return
        try:
            check_config_text(text, path.name)
        except ConfigError as exc:
            for line in str(exc).splitlines():
                typer.secho(f"error: {line}", fg="red", err=True)
            if sys.stdin.isatty() and typer.confirm("Edit it again?", default=True, err=True):
                continue
            _error(f"{path} was not changed; your edit is kept in {draft}")
        write_config_text(path, text)
        draft.unlink()
        typer.echo(f"saved {path}")
        return
