"""phototag status: is the watcher running, how long is the queue, what was tagged last."""

from __future__ import annotations

import typer
from sqlalchemy import func, select

from phototag.cli.common import ListFormat, markup_safe, open_library, out, print_json
from phototag.db.models import Photo, PhotoStatus, WorkItem
from phototag.ingest.queue import WorkQueue
from phototag.watch.lock import running_watcher
from phototag.watch.state import read_state


def register(app: typer.Typer) -> None:
    app.command()(status)


def library_status(lib) -> dict:
    """The numbers ``phototag status`` shows (also used by tests and scripts)."""
    home = lib.settings.home
    pid = running_watcher(home)
    state = read_state(home) or {}
    with lib.session() as session:
        counts = dict(session.execute(select(Photo.status, func.count()).group_by(Photo.status)).all())
        retrying = session.scalar(select(func.count()).select_from(WorkItem).where(
            WorkItem.attempts > 0, WorkItem.set_aside_for.is_(None))) or 0
        last = session.execute(
            select(Photo.path, Photo.tagged_at).where(Photo.tagged_at.is_not(None))
            .order_by(Photo.tagged_at.desc(), Photo.id.desc()).limit(1)
        ).first()
    queue = WorkQueue(lib)
    set_aside = queue.set_aside()  # rows that stay queued but are not tried until something changes
    queue_length = queue.length() - set_aside
    running = pid is not None
    return {
        "home": str(home),
        "daemon": {
            "running": running,
            "pid": pid if running and pid != -1 else None,
            "model": state.get("model") if running else None,
            "roots": state.get("roots", []) if running else [],
            "paused_roots": [r["path"] for r in state.get("roots", []) if r.get("paused")] if running else [],
            "state_updated_at": state.get("updated_at"),
        },
        "queue": {"length": queue_length, "retrying": retrying, "set_aside": set_aside},
        "photos": {
            "total": sum(counts.values()),
            "ok": counts.get(PhotoStatus.ok.value, 0),
            "missing": counts.get(PhotoStatus.missing.value, 0),
            "errors": counts.get(PhotoStatus.error.value, 0),
        },
        "last_tagged": {"path": last.path, "at": last.tagged_at.isoformat()} if last else None,
        "model": lib.settings.default_model,
    }


def status(
    ctx: typer.Context,
    fmt: ListFormat = typer.Option(ListFormat.table, "--format", help="Text or JSON."),
) -> None:
    """Show whether `phototag watch` runs for this home, the queue, errors and the last tagged photo."""
    data = library_status(open_library(ctx))
    if fmt == ListFormat.json:
        print_json(data)
        return
    d = data["daemon"]
    if d["running"]:
        out.print("watcher: [green]running[/green]" + (f" (pid {d['pid']}, model {d['model']})" if d["pid"] else ""))
        for root in d["roots"]:
            flag = " [yellow]paused: not there (unmounted?)[/yellow]" if root.get("paused") else ""
            mode = root.get("mode", "")
            why = f": {root['why_polling']}" if root.get("why_polling") else ""
            out.print(f"  {markup_safe(str(root['path']))} ({mode}{markup_safe(why)}){flag}")
    else:
        out.print("watcher: [red]not running[/red] (start it: phototag watch FOLDER, or phototag service install)")
    q = data["queue"]
    out.print(f"queue: {q['length']} waiting" + (f", {q['retrying']} retrying" if q["retrying"] else ""))
    if q["set_aside"]:
        out.print(f"set aside: {q['set_aside']} photos that failed alone again and again (not retried until the "
                  "file, phototag or the model changes; phototag search status:error says why)")
    p = data["photos"]
    out.print(f"photos: {p['total']} ({p['ok']} ok, {p['missing']} missing, {p['errors']} errors)")
    last = data["last_tagged"]
    out.print(f"last tagged: {markup_safe(last['path'])} at {last['at']}" if last else "last tagged: —")
    out.print(f"default model: {data['model']}")
