"""The daemon's persistent work queue (table ``work_queue``): photos waiting for the model.

Exactly-once, crash or not, rests on three rules:

* a path is **enqueued** (committed) before anything else happens to it, so a kill never loses it;
* the pipeline deletes a photo's queue row **in the transaction that stores its tags**
  (:meth:`phototag.pipeline.Pipeline._persist`), so a kill either keeps both or neither;
* a claimed row is classified again before the model sees it (unchanged → dropped), so an item that
  is processed twice for any reason costs a hash, never a second model run.

Each row carries ``enqueued_at``, bumped whenever the path is enqueued again. A claim remembers it
(:attr:`phototag.pipeline.Job.queued_at`) and the pipeline deletes the row only if it was not
enqueued again meanwhile, so a file that changes while its batch is in flight is tagged once more
rather than forgotten.

``attempts`` counts claims. A row that was claimed but is still here was being worked on when the
process died or the model raised. Such a row gets one more try in an ordinary batch (a kill -9 of the
daemon is no reason to suspect a photo); claimed again after that it is *isolated* (claimed alone, so a
poison file only hurts itself), and after :data:`MAX_ATTEMPTS` unfinished claims the file is recorded as
an error photo and dropped: a file that crashes the decoder cannot crash-loop the daemon.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Collection, Iterable

from sqlalchemy import delete, func, or_, select, update

from phototag.db.models import WorkItem, utcnow
from phototag.library import Library

MAX_ATTEMPTS = 5
ISOLATE_AFTER = 2  # unfinished claims after which a row is claimed alone

PRIORITY_NEW = 10  # a photo that just appeared: the user is waiting for it
PRIORITY_CATCH_UP = 5  # found by a reconcile pass
PRIORITY_RETAG = 0  # background re-tagging


@dataclass(frozen=True)
class QueuedItem:
    id: int
    path: Path
    reason: str
    priority: int
    attempts: int  # earlier claims that did not finish (the process died, or the model raised)
    last_error: str | None
    enqueued_at: dt.datetime

    @property
    def isolated(self) -> bool:
        return self.attempts >= ISOLATE_AFTER


class WorkQueue:
    """Enqueue, claim and give up on queue rows. Thread-safe (every call is its own transaction)."""

    def __init__(self, library: Library, max_attempts: int = MAX_ATTEMPTS):
        self.library = library
        self.max_attempts = max_attempts

    # ---- producers ------------------------------------------------------------------------
    def enqueue(self, paths: Iterable[Path | str], reason: str = "new", priority: int = PRIORITY_NEW,
                model_name: str | None = None) -> int:
        """Add ``paths`` (one transaction). A path already queued keeps its place in line, takes the
        higher priority, and gets a new ``enqueued_at`` so an in-flight claim of it is not the last word.
        Returns the number of paths given."""
        paths = list(dict.fromkeys(str(p) for p in paths))
        if not paths:
            return 0
        with self.library.session() as session:
            for start in range(0, len(paths), 500):
                chunk = paths[start:start + 500]
                existing = {row.path: row for row in session.scalars(select(WorkItem).where(WorkItem.path.in_(chunk)))}
                now = utcnow()
                for path in chunk:
                    row = existing.get(path)
                    if row is None:
                        session.add(WorkItem(path=path, reason=reason, model_name=model_name, priority=priority,
                                             attempts=0, enqueued_at=now))
                        continue
                    row.priority = max(row.priority, priority)
                    if reason != "retag":
                        row.reason = reason
                    # strictly later than before, even if the clock stepped back
                    row.enqueued_at = max(now, row.enqueued_at + dt.timedelta(microseconds=1))
        return len(paths)

    def forget(self, paths: Iterable[Path | str]) -> int:
        """Drop queue rows (the file was deleted, or turned out to be no photo)."""
        paths = [str(p) for p in paths]
        if not paths:
            return 0
        with self.library.session() as session:
            result = session.execute(delete(WorkItem).where(WorkItem.path.in_(paths)))
            return result.rowcount or 0

    def rename(self, old: Path | str, new: Path | str) -> bool:
        """A queued file was moved before it was tagged: queue it under its new path."""
        with self.library.session() as session:
            row = session.scalar(select(WorkItem).where(WorkItem.path == str(old)))
            if row is None:
                return False
            session.delete(row)
        self.enqueue([new], row.reason, row.priority, row.model_name)
        return True

    # ---- the consumer ---------------------------------------------------------------------
    def claim(self, limit: int, skip: Collection[str] = ()) -> list[QueuedItem]:
        """Up to ``limit`` rows in priority, then FIFO, order; ``attempts`` is incremented (committed).

        ``skip``: paths with a claim still in flight in this process: never two jobs for one file at
        once (a row enqueued again meanwhile is claimed after the first job is done). Rows that already
        failed :data:`ISOLATE_AFTER` times come first and alone (a one-item list), so that a poison file
        only hurts itself. Re-tag rows with a ``model_name`` (``phototag retag --model X``) are never
        claimed: that command drains them itself."""
        skip = set(skip)
        # a re-tag row naming a model belongs to a running `phototag retag --model X`: it drains its own
        # rows (tagging them with the daemon's model instead would undo what the user asked for)
        ours = or_(WorkItem.reason != "retag", WorkItem.model_name.is_(None))
        with self.library.session() as session:
            suspect = session.scalars(
                select(WorkItem).where(ours, WorkItem.attempts >= ISOLATE_AFTER).order_by(WorkItem.priority.desc(), WorkItem.id)
                .limit(len(skip) + 1)
            ).all()
            suspect = [r for r in suspect if r.path not in skip][:1]
            if suspect:
                rows = suspect
            else:
                rows = session.scalars(
                    select(WorkItem).where(ours).order_by(WorkItem.priority.desc(), WorkItem.id)
                    .limit(limit + len(skip))
                ).all()
                rows = [r for r in rows if r.path not in skip][:limit]
            if not rows:
                return []
            items = [
                QueuedItem(r.id, Path(r.path), r.reason, r.priority, r.attempts, r.last_error, r.enqueued_at)
                for r in rows
            ]
            session.execute(
                update(WorkItem).where(WorkItem.id.in_([r.id for r in rows])).values(attempts=WorkItem.attempts + 1)
            )
            return items

    def queued_paths(self, paths: Collection[str]) -> set[str]:
        """Which of ``paths`` have a queue row (whatever its ``enqueued_at``)."""
        if not paths:
            return set()
        with self.library.session() as session:
            return set(session.scalars(select(WorkItem.path).where(WorkItem.path.in_(list(paths)))).all())

    def still_queued(self, claims: dict[str, dt.datetime]) -> set[str]:
        """Which of these claims are still in the queue unchanged (neither done nor enqueued again)."""
        if not claims:
            return set()
        with self.library.session() as session:
            rows = session.execute(
                select(WorkItem.path, WorkItem.enqueued_at).where(WorkItem.path.in_(list(claims)))
            ).all()
        return {p for p, stamp in rows if claims.get(p) == stamp}

    def note_failure(self, paths: Iterable[Path | str], error: str) -> None:
        """The model (or something else) failed on a batch with these rows; they stay queued."""
        paths = [str(p) for p in paths]
        if paths:
            with self.library.session() as session:
                session.execute(update(WorkItem).where(WorkItem.path.in_(paths)).values(last_error=error[:2000]))

    def give_up(self, item: QueuedItem, root: Path | None) -> None:
        """Record ``item`` as an error photo (with the reason) and drop it from the queue."""
        reason = f"gave up after {item.attempts} failed attempts"
        reason += f": {item.last_error}" if item.last_error else " (the process died while it was being tagged)"
        with self.library.session() as session:
            try:
                st = item.path.stat()
                size, mtime = st.st_size, st.st_mtime
            except OSError:
                size = mtime = None
            self.library.record_error(session, item.path, root, reason, size, mtime)
            session.execute(delete(WorkItem).where(WorkItem.path == str(item.path)))

    # ---- reading --------------------------------------------------------------------------
    def length(self) -> int:
        with self.library.session() as session:
            return session.scalar(select(func.count()).select_from(WorkItem)) or 0

    def failing(self) -> int:
        """Rows that were claimed and are still queued (retrying)."""
        with self.library.session() as session:
            return session.scalar(select(func.count()).select_from(WorkItem).where(WorkItem.attempts > 0)) or 0
