"""What ``phototag status`` reports: is the watcher running, how long is the queue, the photo
counts and the last tagged photo. One function, shown by the CLI (``phototag status``) and by
``phototag serve``'s status page."""

from __future__ import annotations

from sqlalchemy import func, select

from phototag.db.models import Photo, PhotoStatus, WorkItem
from phototag.ingest.queue import WorkQueue
from phototag.watch.lock import running_watcher
from phototag.watch.state import read_state


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
