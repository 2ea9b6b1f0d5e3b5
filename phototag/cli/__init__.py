"""The ``phototag`` command line. One thin module per command: parse, call a service, render."""

from __future__ import annotations

import contextlib
import copy
import importlib
import logging
import sys
from pathlib import Path
from typing import Any, Iterator, Optional

import click
import typer
import typer.core
import typer.main

from phototag import __version__
from phototag.config import (
    DEFAULTS,
    ConfigError,
    Settings,
    load_settings,
    resolve_home,
    use_settings,
)
from phototag.errors import PhototagError

app = typer.Typer(
    name="phototag",
    help="Tag a photo library with thousands of tags (RAM/RAM++/Tag2Text, or the built-in model), "
    "search it, and write the tags where photo apps read them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # plain click help: paragraphs re-flowed as written (rich mode kept the docstrings' line breaks
    # and wrapped them again mid-sentence), no <bool>/<int> type column for flags, no markup eaten
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# Every command: its name (= its module phototag.cli.<name>, which defines register(app)) and the first
# paragraph of its help, which is all `phototag --help` and the completion of a command name show. A module
# is imported only when its command runs (or its own --help is asked for), so listing the commands costs
# no sqlalchemy, numpy or torch. The order is the order of `phototag --help`; tests/test_startup.py checks
# that each line here is the command's own help.
COMMANDS: dict[str, str] = {
    "scan": "Tag every new or changed photo under PATH.",
    "watch": "Watch folders and tag photos as they arrive.",
    "status": "Show whether `phototag watch` runs for this home, the queue, errors and the last tagged photo.",
    "search": "Find photos. Exits 1 when nothing matched (like grep).",
    "similar": "Show the photos that look most like PHOTO, most similar first.",
    "show": "Show a photo's EXIF, status, caption and tags (with score, source and model).",
    "tags": "List tags with how many photos carry them, most used first.",
    "serve": "Browse, search and correct the library's tags in a web browser.",
    "export": "Write the library's tags to sidecars or other apps (exporters come from plugins).",
    "retag": "Re-tag photos with a model version, replacing only model tags.",
    "calibrate": "Tune per-tag thresholds from the tags you removed and added.",
    "finetune": "Fine-tune the tagging head (backbone frozen, features cached) on your corrections.",
    "tag": "Add, remove or list a photo's tags by hand.",
    "models": "Install and manage tagging models (RAM, RAM++, Tag2Text packs).",
    "index": "The similar-photo search index: a cache of the stored embeddings, kept in step automatically.",
    "plugins": "List plugins; enable or disable them.",
    "config": "Show and change settings (config.toml of the library home).",
    "db": "Library database: schema revision and upgrades.",
    "service": "Run `phototag watch` in the background as a systemd user service.",
}


class _CommandName(click.Command):
    """A command as the list of commands shows it, before its module is imported: name and help."""

    def __init__(self, name: str, help: str) -> None:
        super().__init__(name, help=help)


class LazyGroup(typer.core.TyperGroup):
    """The root command: knows each command by :data:`COMMANDS` and imports ``phototag.cli.<name>``
    only when that command is looked up to run, to parse its arguments or to show its own help.

    Listing the commands (``phototag --help``, completing a command name) uses the names and help
    lines of :data:`COMMANDS`. A command registered on :data:`app` the ordinary way (``register(app)``)
    is used as it is; one that :data:`COMMANDS` does not name comes after the others."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        registered = dict(self.commands)
        self.commands = {name: registered.pop(name, None) or _CommandName(name, help_line)
                         for name, help_line in COMMANDS.items()}
        self.commands.update(registered)
        self._names_only = False

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = self.commands.get(cmd_name)
        if isinstance(command, _CommandName) and not self._names_only:
            command = self.commands[cmd_name] = _load_command(cmd_name)
        return command

    def load_all(self) -> None:
        """Import every command (for tools that inspect them all, e.g. documentation tests)."""
        for name in list(self.commands):
            self.get_command(click.Context(self), name)

    @contextlib.contextmanager
    def _listing(self) -> Iterator[None]:
        self._names_only = True
        try:
            yield
        finally:
            self._names_only = False

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with self._listing():
            super().format_help(ctx, formatter)

    def shell_complete(self, ctx: click.Context, incomplete: str) -> list:
        with self._listing():
            return super().shell_complete(ctx, incomplete)


def _load_command(name: str) -> click.Command:
    """The click command of ``phototag.cli.<name>``, built as the root app would have built it."""
    module = importlib.import_module(f"phototag.cli.{name}")
    holder = typer.Typer()
    for setting in ("rich_markup_mode", "pretty_exceptions_short", "suggest_commands"):
        if hasattr(app, setting):
            setattr(holder, setting, getattr(app, setting))
    module.register(holder)
    return typer.main.get_group(holder).commands[name]


# the Typer(...) call above stays as it is; the root group it builds is the lazy one
app.info.cls = LazyGroup


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
    # a schema upgrade's step-by-step INFO lines are for -vv (debugging), not for -v
    logging.getLogger("alembic").setLevel(logging.WARNING if verbose < 2 else logging.NOTSET)
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


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except PhototagError as exc:  # every error meant for the user (phototag.errors); anything else is a bug
        show_user_error(exc)
        sys.exit(exc.exit_code)
