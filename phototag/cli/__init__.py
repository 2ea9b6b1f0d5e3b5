"""The ``phototag`` command line. One thin module per command: parse, call a service, render."""

from __future__ import annotations

import copy
import importlib
import logging
import sys
from pathlib import Path
from typing import Optional

import typer

from phototag import __version__
from phototag.config import DEFAULTS, ConfigError, Settings, load_settings, resolve_home, use_settings

app = typer.Typer(
    name="phototag",
    help="Tag a photo library with thousands of tags (RAM/RAM++/Tag2Text, or the built-in model), "
    "search it, and write the tags where photo apps read them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# Each module defines register(app). The order is the order of `phototag --help`.
COMMAND_MODULES = [
    "scan", "watch", "status", "search", "similar", "show", "tags", "tag", "export",
    "retag", "calibrate", "finetune", "models", "index", "plugins", "config", "db", "service",
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"phototag {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    home: Optional[Path] = typer.Option(
        None, "--home", envvar="PHOTOTAG_HOME", help="Library home (database, index, models, config.toml). "
        "Default: the platform's user data dir, e.g. ~/.local/share/phototag.", show_default=False,
    ),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="More log output (-vv for debug)."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
) -> None:
    logging.basicConfig(
        level=logging.WARNING - 10 * min(verbose, 2),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    obj = ctx.ensure_object(dict)
    try:
        settings = load_settings(home)
    except ConfigError as exc:
        if ctx.invoked_subcommand != "config":
            show_user_error(exc)
            raise typer.Exit(2)
        # `phototag config` is how a broken config.toml is mended: it gets the defaults and the error
        settings = Settings(home=resolve_home(home), data=copy.deepcopy(DEFAULTS))
        obj["config_error"] = exc
    use_settings(settings)


def show_user_error(exc: BaseException | str) -> None:
    """A user's mistake as ``error: …`` lines on stderr, without a traceback (the caller exits 2)."""
    for line in str(exc).splitlines() or [""]:
        typer.secho(f"error: {line}", fg="red", err=True)


for _name in COMMAND_MODULES:
    importlib.import_module(f"phototag.cli.{_name}").register(app)


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions whose message is meant for the user: shown without a traceback."""
    from phototag.db.engine import DatabaseError
    from phototag.ingest.decode import DecodeError
    from phototag.library import LibraryError
    from phototag.tagging.base import TaggerError

    errors: list[type[BaseException]] = [ConfigError, DatabaseError, DecodeError, LibraryError, TaggerError]
    for module, name in (("phototag.query", "QueryError"), ("phototag.tagging.weights", "CheckpointError"),
                         ("phototag.plugins", "PluginError"), ("phototag.export", "ExportError"),
                         ("phototag.search", "SearchError")):
        try:
            errors.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            pass
    return tuple(errors)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as exc:
        if isinstance(exc, _user_errors()):
            show_user_error(exc)
            sys.exit(2)
        raise
