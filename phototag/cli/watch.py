"""phototag watch ROOT...: tag photos as they arrive; follow moves; mark deletes missing."""

from __future__ import annotations

import logging
import os
import signal
import threading
from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer

from phototag.cli.common import after_commit_hook, fail, open_library
from phototag.tagging.base import TaggerError
from phototag.tagging.registry import get_tagger
from phototag.watch.daemon import Watcher
from phototag.watch.errors import WatchError, WatchFatal
from phototag.watch.lock import WatchLock
from phototag.watch.logs import configure_logging
from phototag.watch.state import write_state

log = logging.getLogger("phototag.watch")


class LogFormat(str, Enum):
    text = "text"
    json = "json"


def register(app: typer.Typer) -> None:
    app.command()(watch)


def watch(
    ctx: typer.Context,
    roots: Optional[List[Path]] = typer.Argument(
        None, help="Folders to watch (default: the setting watch.roots).", show_default=False),
    model: Optional[str] = typer.Option(
        None, "--model", "-m", help="Model to tag with (default: the configured default, followed when it "
        "changes; with --model there is no background re-tagging unless it is the default)."),
    polling: Optional[bool] = typer.Option(
        None, "--polling/--no-polling", help="Poll the folders instead of inotify (network drives; default: "
        "setting watch.polling; network filesystems and inotify limits switch to polling by themselves).",
        show_default=False),
    stable_seconds: Optional[float] = typer.Option(
        None, help="A file is tagged once its size and mtime have not changed for this long (default: watch.stable_seconds = 3).",
        show_default=False),
    batch_size: int = typer.Option(0, help="Photos per model batch (0 = the model's preference)."),
    workers: int = typer.Option(0, help="Decode threads (0 = auto: the cores are shared with the model by device)."),
    log_format: LogFormat = typer.Option(LogFormat.text, "--log-format", help="text, or json: one JSON object per line."),
) -> None:
    """Watch folders and tag photos as they arrive.

    A new or changed photo is tagged once its size and mtime have been stable for a few seconds.
    Moves and renames keep tags; deleted photos are marked missing (never purged); a folder that
    disappears as a whole (an unmounted drive) is paused, not marked missing. A reconcile pass at
    start and every watch.reconcile_minutes catches anything the events missed. The work queue lives
    in the library database: after a crash or kill, a restart tags every photo exactly once.
    In the background (retag.window, at low priority) photos are re-tagged when default_model
    changes or retag.every says so. SIGTERM/SIGINT finish the batch in progress and exit (status 0).
    A fatal error (the library database failing or removed) exits with status 1, so that a
    supervisor (systemd's Restart=on-failure) starts it again.
    """
    try:
        _watch(ctx, roots, model, polling, stable_seconds, batch_size, workers, log_format)
    except WatchError as exc:
        fail(str(exc))


def _watch(ctx, roots, model, polling, stable_seconds, batch_size, workers, log_format) -> None:
    debug = logging.getLogger().level <= logging.DEBUG  # -vv
    configure_logging(log_format.value, logging.DEBUG if debug else logging.INFO, capture_output=True)
    # alembic's INFO lines ("Context impl SQLiteImpl.", "Running upgrade …") are not news in a daemon's log
    logging.getLogger("alembic").setLevel(logging.NOTSET if debug else logging.WARNING)
    for r in roots or []:
        if os.path.exists(os.path.expanduser(r)) and not os.path.isdir(os.path.expanduser(r)):
            raise WatchError(f"{r} is a file, not a folder: watch the folder it is in, or tag it with phototag scan {r}")
    lib = open_library(ctx)
    settings = lib.settings
    if not roots:
        roots = [Path(p) for p in (settings.get("watch.roots") or [])]
    if not roots:
        raise WatchError("no folders to watch: phototag watch ~/Pictures (or set watch.roots in config.toml)")
    missing = [r for r in roots if not Path(r).expanduser().exists()]
    for r in missing:
        log.warning("%s does not exist (yet): it is watched once it appears", r, extra={"event": "root_paused", "root": str(r)})
    # a server library (PostgreSQL) is shared by many watchers, which coordinate through it; a SQLite one
    # has one watcher per home
    lock = WatchLock(settings.home, shared=lib.db.dialect != "sqlite")
    lock.acquire()
    try:
        tagger = get_tagger(settings, model)
        stop = threading.Event()

        def on_signal(signum, _frame):
            if stop.is_set():
                return
            log.info("%s: finishing the current batch, then exiting", signal.Signals(signum).name,
                     extra={"event": "stopping"})
            stop.set()
            watcher.stop()

        watcher = Watcher(
            lib, tagger, roots, polling=polling, stable_seconds=stable_seconds, batch_size=batch_size or None,
            decode_workers=workers or None, stop_event=stop, on_commit=after_commit_hook(lib),
            on_state=lambda state: write_state(settings.home, state),
            follow_default_model=model is None,  # --model pins the model; else a new default is followed
        )
        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            log.info("phototag watch started (pid %d, model %s, home %s)", os.getpid(), tagger.name,
                     settings.home, extra={"event": "started", "model": tagger.name})
            stats = watcher.run()
        except TaggerError:  # the model cannot be loaded: a one-line user error (exit 2)
            raise
        except Exception as exc:  # WatchFatal, or anything else: never a quiet exit 0
            detail = exc.__cause__ if isinstance(exc, WatchFatal) and exc.__cause__ is not None else exc
            log.error("phototag watch stopped on a fatal error: %s: %s (exit status 1)", type(detail).__name__,
                      detail, exc_info=None if isinstance(exc, WatchFatal) else exc,
                      extra={"event": "stopped", "error": str(detail), "exit_status": 1})
            raise typer.Exit(1) from exc
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
        log.info("phototag watch stopped: %d tagged, %d failed, %d moved, %d missing", stats.tagged, stats.failed,
                 stats.moved, stats.missing, extra={"event": "stopped"})
    finally:
        lock.release()
