"""What a filesystem event means, decided in the watcher's event thread (the only place that does).

* New and changed files are **tracked** until their size and mtime have been stable for
  ``watch.stable_seconds``, then enqueued (:mod:`phototag.ingest.queue`, committed).
* **Moves** are applied at once: tags follow the file (a folder moved inside the roots takes its
  photos and queued rows along); a file moved in from outside is new, one moved out is deleted.
* **Deletes** are applied after ``watch.delete_seconds`` (an atomic save deletes and recreates):
  photos are marked missing, never purged; a root whose drive went away is paused instead.
* An event on an XMP **sidecar** tracks the photos it belongs to (two-way sync, docs/sync.md); one
  that was phototag's own export (the sidecar is as phototag last read or wrote it) is dropped.
"""

from __future__ import annotations

import logging
import os
import queue as queue_mod
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import select
from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
)

from phototag.db.models import Photo, PhotoStatus
from phototag.ingest.keywords import sidecar_stat
from phototag.ingest.queue import PRIORITY_NEW
from phototag.ingest.walk import is_skipped_dir, iter_photo_files

if TYPE_CHECKING:
    from phototag.watch.daemon import Watcher
    from phototag.watch.roots import RootState

log = logging.getLogger("phototag.watch")


@dataclass
class _Pending:
    deadline: float
    size: int
    mtime: float
    priority: int = PRIORITY_NEW


class EventTracker:
    """Files waiting to be stable, deletes waiting to be sure, and the events that feed them."""

    def __init__(self, watcher: Watcher, *, stable_seconds: float, delete_delay: float):
        self.watcher = watcher
        self.stable_seconds = stable_seconds
        self.delete_delay = delete_delay
        self.inbox: queue_mod.Queue = queue_mod.Queue()  # what the observers saw (None: wake up)
        self._pending: dict[str, _Pending] = {}
        self._deletes: dict[str, tuple[float, bool]] = {}  # path → (deadline, is_dir)
        self._sidecar_only: set[str] = set()  # pending only because their sidecar had an event

    # ---- what is waiting ----------------------------------------------------------------------
    def is_pending(self, path: str) -> bool:
        return path in self._pending

    def pending_count(self) -> int:
        return len(self._pending)

    def deadlines(self) -> list[float]:
        return [p.deadline for p in self._pending.values()] + [d for d, _ in self._deletes.values()]

    def forget_under(self, prefix: str) -> None:
        """A root went away: what waited under it is dropped (a reconcile finds it when it is back)."""
        for p in [p for p in self._pending if p.startswith(prefix)]:
            del self._pending[p]
        for p in [p for p in self._deletes if p.startswith(prefix)]:
            del self._deletes[p]

    def settle(self, now: float) -> None:
        self._settle_deletes(now)
        self._settle_pending(now)

    # ---- events -------------------------------------------------------------------------------
    def on_event(self, event: FileSystemEvent) -> None:
        try:
            src = os.fsdecode(event.src_path)
            if not event.is_directory:  # a sidecar created, changed, saved over (moved in) or deleted
                for path in (src, os.fsdecode(event.dest_path) if isinstance(event, FileMovedEvent) else ""):
                    for photo in self._photos_of_sidecar(path):
                        self.track(photo, sidecar=True)
            if isinstance(event, (DirMovedEvent, FileMovedEvent)):
                self._on_moved(src, os.fsdecode(event.dest_path), event.is_directory)
            elif isinstance(event, DirDeletedEvent) or isinstance(event, FileDeletedEvent):
                self._on_deleted(src, event.is_directory)
            elif isinstance(event, DirCreatedEvent):
                self.track_tree(src)
            elif isinstance(event, (FileCreatedEvent, FileModifiedEvent, FileClosedEvent)):
                self.track(src)
        except Exception:
            log.exception("could not handle %s", event)

    def _photos_of_sidecar(self, path: str) -> list[str]:
        """The photos an XMP sidecar belongs to (two-way sync, docs/sync.md): ``a.jpg.xmp`` is a.jpg's,
        ``a.xmp`` that of every photo named ``a.<ext>`` in its folder. Empty for any other file."""
        extensions = self.watcher.roots.extensions
        folder, name = os.path.split(path)
        if not name.lower().endswith(".xmp") or name.startswith("."):
            return []
        stem = name[:-4]
        photos = [os.path.join(folder, stem)] if os.path.splitext(stem)[1].lower() in extensions else []
        try:
            entries = os.listdir(folder)
        except OSError:
            entries = []
        photos += [os.path.join(folder, e) for e in entries
                   if os.path.splitext(e)[0] == stem and os.path.splitext(e)[1].lower() in extensions]
        return [p for p in dict.fromkeys(photos) if os.path.isfile(p)]

    def _unchanged_sidecars(self, paths: list[str]) -> set[str]:
        """Of ``paths``, the photos tracked only for a sidecar event whose sidecars are as phototag last
        read or wrote them (the event was phototag's own export): nothing to read."""
        only = [p for p in paths if p in self._sidecar_only]
        self._sidecar_only.difference_update(only)
        if not only:
            return set()
        with self.watcher.library.session() as session:
            stored = dict(session.execute(select(Photo.path, Photo.sidecar_stat).where(Photo.path.in_(only))).all())
        return {p for p in only if stored.get(p) is not None and stored[p] == sidecar_stat(p)}

    # ---- new and changed files ----------------------------------------------------------------
    def track(self, path: str, priority: int = PRIORITY_NEW, sidecar: bool = False) -> None:
        roots = self.watcher.roots
        root = roots.root_of(path)
        if root is None or root.paused or not roots.wanted(path, root):
            return
        if not sidecar:
            self._sidecar_only.discard(path)
        elif path not in self._pending:
            self._sidecar_only.add(path)
        try:
            st = os.lstat(path)
        except OSError:
            self._pending.pop(path, None)
            return
        if os.path.islink(path) and not roots.follow_symlinks:
            return
        self._deletes.pop(path, None)
        self._pending[path] = _Pending(time.monotonic() + self.stable_seconds, st.st_size, st.st_mtime, priority)

    def track_tree(self, folder: str) -> None:
        """A folder appeared (created, or moved in from outside): its files may have no events of their own."""
        roots = self.watcher.roots
        root = roots.root_of(folder)
        if root is None or root.paused:
            return
        rel = os.path.relpath(folder, root.path)
        if rel != "." and any(is_skipped_dir(p) for p in rel.split(os.sep)):
            return
        for found in iter_photo_files(folder, roots.extensions, roots.follow_symlinks):
            self.track(str(found.path))

    def _settle_pending(self, now: float) -> None:
        due = [p for p, s in self._pending.items() if s.deadline <= now]
        if not due:
            return
        w = self.watcher
        stable: dict[int, list[str]] = {}
        for path in due:
            entry = self._pending[path]
            try:
                st = os.stat(path)
            except OSError:
                del self._pending[path]
                continue
            if (st.st_size, st.st_mtime) == (entry.size, entry.mtime):
                del self._pending[path]
                stable.setdefault(entry.priority, []).append(path)
            else:  # still being written
                self._pending[path] = _Pending(now + self.stable_seconds, st.st_size, st.st_mtime, entry.priority)
        for priority, paths in list(stable.items()):
            unchanged = self._unchanged_sidecars(paths)
            paths = stable[priority] = [p for p in paths if p not in unchanged]
            if not paths:
                del stable[priority]
                continue
            w.queue.enqueue(paths, "new", priority)
            w.stats.enqueued += len(paths)
            log.debug("enqueued %d stable files", len(paths), extra={"event": "enqueued", "count": len(paths)})
        if stable:
            w.wakeup.set()

    # ---- moves and deletes ------------------------------------------------------------------
    def _on_moved(self, src: str, dest: str, is_dir: bool) -> None:
        w = self.watcher
        roots = w.roots
        src_root, dest_root = roots.root_of(src), roots.root_of(dest)
        if src_root is not None and src_root.path == Path(src):  # the root itself moved away
            w.next_root_check = 0.0
            return
        if dest_root is None or dest_root.paused:
            self._on_deleted(src, is_dir)
            return
        if src_root is None or src_root.paused:
            self.track_tree(dest) if is_dir else self.track(dest)
            return
        if is_dir:
            self._move_tree(src, dest, dest_root)
            return
        # a pending file keeps being tracked under its new name
        pending = self._pending.pop(src, None)
        if not roots.wanted(dest, dest_root):
            self._on_deleted(src, False)
            return
        if not roots.wanted(src, src_root) or pending is not None:
            self.track(dest)  # e.g. "photo.jpg.part" → "photo.jpg", or an atomic save
            return
        moved = False
        with w.library.session() as session:
            photo = w.library.photo_by_path(session, src)
            if photo is not None and photo.status == PhotoStatus.error.value:
                photo = None
                self._on_deleted(src, False)
            if photo is not None:
                try:
                    mtime = os.stat(dest).st_mtime
                except OSError:
                    mtime = photo.mtime
                w.library.move_photo(session, photo, Path(dest), dest_root.path, mtime)
                moved = True
        requeued = w.queue.rename(src, dest)
        if moved:
            w.stats.moved += 1
            log.info("moved %s → %s (tags kept)", src, dest, extra={"event": "moved", "path": dest, "from": src})
        if requeued:
            w.wakeup.set()
        if not moved and not requeued:
            self.track(dest)

    def _move_tree(self, src: str, dest: str, dest_root: RootState) -> None:
        """A folder was renamed or moved inside the watched roots: every photo under it follows, and so
        do its queued rows (in the same transaction)."""
        w = self.watcher
        src_prefix, dest_prefix = src.rstrip(os.sep) + os.sep, dest.rstrip(os.sep) + os.sep
        n = 0
        with w.library.session() as session:
            photos = session.scalars(select(Photo).where(Photo.path.startswith(src_prefix, autoescape=True))).all()
            for photo in photos:
                new_path = dest_prefix + photo.path[len(src_prefix):]
                if not w.roots.wanted(new_path, dest_root):
                    continue
                w.library.move_photo(session, photo, Path(new_path), dest_root.path, photo.mtime or 0.0)
                n += 1
            w.queue.move_tree(session, src_prefix, dest_prefix)
        for path in [p for p in self._pending if p.startswith(src_prefix)]:
            del self._pending[path]
        w.stats.moved += n
        if n:
            log.info("moved folder %s → %s (%d photos keep their tags)", src, dest, n,
                     extra={"event": "moved_folder", "path": dest, "from": src, "count": n})
        self.track_tree(dest)  # files without a row yet (and the ones the event raced with)
        w.wakeup.set()

    def _on_deleted(self, path: str, is_dir: bool) -> None:
        w = self.watcher
        root = w.roots.root_of(path)
        if root is None:
            return
        if root.path == Path(path):
            w.next_root_check = 0.0  # the root itself: paused by the root check, nothing marked
            return
        self._pending.pop(path, None)
        if is_dir:
            prefix = path.rstrip(os.sep) + os.sep
            for p in [p for p in self._pending if p.startswith(prefix)]:
                del self._pending[p]
        elif not w.roots.wanted(path, root):
            return
        self._deletes[path] = (time.monotonic() + self.delete_delay, is_dir)

    def _settle_deletes(self, now: float) -> None:
        due = [(p, d) for p, (deadline, d) in self._deletes.items() if deadline <= now]
        if not due:
            return
        w = self.watcher
        files, prefixes = [], []
        for path, is_dir in due:
            if self._deletes.pop(path, None) is None:
                continue  # forgotten meanwhile: its root was paused by an earlier delete of this pass
            root = w.roots.root_of(path)
            if root is None or root.paused:
                continue
            if not w.roots.present(root):  # the drive went away: that is not a deletion
                w.roots.pause(root)
                continue
            if os.path.lexists(path):  # it came back (an atomic save); its own events track it
                continue
            (prefixes if is_dir else files).append(path)
        if not files and not prefixes:
            return
        with w.library.session() as session:
            for prefix in prefixes:
                rows = session.scalars(
                    select(Photo.path).where(Photo.path.startswith(prefix.rstrip(os.sep) + os.sep, autoescape=True))
                ).all()
                files.extend(p for p in rows if not os.path.lexists(p))
            n = w.library.mark_missing(session, files)
        w.queue.forget(files)
        if n:
            w.stats.missing += n
            log.info("%d photos deleted: marked missing (tags kept)", n,
                     extra={"event": "missing", "count": n, "path": files[0] if len(files) == 1 else None})
