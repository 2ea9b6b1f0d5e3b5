"""The watched roots: which of them a path is under, which files in them are photos we tag, whether
a root is there at all, and what to do when it is not.

A root that goes away (an unmounted drive leaves its mount point behind, on another device) is
**paused**: its photos are not marked missing, its pending events are dropped; when it comes back it
is watched again and **reconciled**: the files on disk are compared with the library, new and
changed ones are enqueued, vanished photos are marked missing. The start-up **catch-up** pass is a
reconcile of every root; it is tried again a few times, then the watcher stops.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator

from sqlalchemy import select

from phototag.db.models import Photo, PhotoStatus
from phototag.ingest.keywords import sidecar_stat
from phototag.ingest.queue import PRIORITY_CATCH_UP
from phototag.ingest.walk import is_ignored_name, is_skipped_dir, iter_photo_files
from phototag.watch.errors import FATAL_AFTER
from phototag.watch.observers import NATIVE_MODE

if TYPE_CHECKING:
    from phototag.watch.daemon import Watcher

log = logging.getLogger("phototag.watch")

@dataclass
class RootState:
    path: Path
    device: int | None = None  # st_dev when it was last seen: a different one means another drive
    paused: bool = False
    mode: str = NATIVE_MODE  # the platform's observer (inotify on Linux) | polling
    why_polling: str | None = None
    watch: object | None = None  # the watchdog ObservedWatch
    observer: object | None = None

    def as_dict(self) -> dict:
        return {"path": str(self.path), "paused": self.paused, "mode": self.mode, "why_polling": self.why_polling}


class Roots:
    """The roots of one watcher (a sequence of :class:`RootState`), and what happens to them."""

    def __init__(self, watcher: Watcher, paths: Iterable[Path | str], *, extensions: set[str],
                 follow_symlinks: bool, home: Path):
        self.watcher = watcher
        self.states = [RootState(Path(r).expanduser().resolve()) for r in paths]
        self.extensions = extensions
        self.follow_symlinks = follow_symlinks
        self.home = home
        self.last_reconcile = 0.0

    def __iter__(self) -> Iterator[RootState]:
        return iter(self.states)

    def __len__(self) -> int:
        return len(self.states)

    def __getitem__(self, index: int) -> RootState:
        return self.states[index]

    # ---- paths ----------------------------------------------------------------------------
    def root_of(self, path: str) -> RootState | None:
        best = None
        for root in self.states:
            prefix = str(root.path).rstrip(os.sep) + os.sep
            if (path == str(root.path) or path.startswith(prefix)) and (
                best is None or len(str(root.path)) > len(str(best.path))
            ):
                best = root
        return best

    def wanted(self, path: str, root: RootState | None = None) -> bool:
        """Is this a photo file we tag (by name: hidden, temp, sidecar, caches and our home are not)?"""
        root = root or self.root_of(path)
        if root is None:
            return False
        rel = os.path.relpath(path, root.path)
        if rel == "." or rel.startswith(".."):
            return False
        parts = rel.split(os.sep)
        if any(is_skipped_dir(p) for p in parts[:-1]) or is_ignored_name(parts[-1]):
            return False
        if os.path.splitext(parts[-1])[1].lower() not in self.extensions:
            return False
        home = str(self.home).rstrip(os.sep) + os.sep
        return not path.startswith(home)

    def present(self, root: RootState) -> bool:
        """The root is there: a folder on the drive it was on (an unmounted drive leaves its mount point
        behind, on another device). Before we know its drive (at start, after a pause), an empty folder
        standing in for photos the library knows counts as not there: it looks like an unmounted drive."""
        try:
            st = root.path.stat()
            if not os.path.isdir(root.path):
                return False
            if root.device is not None:
                return st.st_dev == root.device
            with os.scandir(root.path) as it:
                empty = next(it, None) is None
        except OSError:
            return False
        if not empty:
            return True
        prefix = str(root.path).rstrip(os.sep) + os.sep
        with self.watcher.library.session() as session:
            known = session.scalar(
                select(Photo.id).where(Photo.path.startswith(prefix, autoescape=True),
                                       Photo.status != PhotoStatus.missing.value).limit(1)
            )
        return known is None

    # ---- watching, pausing, resuming --------------------------------------------------------
    def start(self) -> None:
        """Watch every root that is there; the others are paused until they come back."""
        for root in self.states:
            if not self.present(root):
                root.paused = True
                log.warning("root %s is not there (unmounted?): paused until it comes back", root.path,
                            extra={"event": "root_paused", "root": str(root.path)})
                continue
            root.device = root.path.stat().st_dev
            self.watcher.observers.schedule(root)

    def check(self) -> None:
        for root in self.states:
            present = self.present(root)
            if root.paused and present:
                self.resume(root)
            elif not root.paused and not present:
                self.pause(root)
        self._take_over_leads()

    def _take_over_leads(self) -> None:
        """A shared library: a root another watcher walked is ours to walk once that watcher is gone
        (stopped, killed, its drive unmounted); start with a catch-up pass of it."""
        leadership = self.watcher.leadership
        if not leadership.shared:
            return
        leadership.check()
        held = leadership.held()
        for root in self.states:
            if root.paused or str(root.path) in held or not leadership.leads(str(root.path)):
                continue
            log.info("root %s: this watcher now runs its catch-up and reconcile passes (the watcher that "
                     "did is gone)", root.path, extra={"event": "lead_taken", "root": str(root.path)})
            self.reconcile(root, requeue=False)

    def pause(self, root: RootState) -> None:
        w = self.watcher
        root.paused = True
        root.device = None  # when it comes back it may be on another device number
        w.leadership.resign(str(root.path))  # a watcher that still sees it walks it
        w.observers.unschedule(root)
        w.events.forget_under(str(root.path).rstrip(os.sep) + os.sep)
        log.warning("root %s went away (unmounted or removed): paused; its photos are not marked missing",
                    root.path, extra={"event": "root_paused", "root": str(root.path)})
        w.publish_state()

    def resume(self, root: RootState) -> None:
        w = self.watcher
        root.paused = False
        root.device = root.path.stat().st_dev
        w.observers.unschedule(root)
        root.mode, root.why_polling = NATIVE_MODE, None
        w.observers.schedule(root)
        log.warning("root %s is back: resumed, catching up", root.path,
                    extra={"event": "root_resumed", "root": str(root.path)})
        w.consumer.paused_claims.clear()
        self.reconcile(root)
        w.publish_state()

    # ---- reconcile --------------------------------------------------------------------------
    def reconcile(self, root: RootState, requeue: bool = True) -> int:
        """Compare ``root`` on disk with the library: enqueue new/changed files (recent ones are tracked
        until stable first), mark vanished photos missing. Returns the number of files enqueued.

        ``requeue=False`` (taking over from a watcher that died): a file already queued is left as it
        is, unless it is an error photo (enqueued again, a set-aside row gets its new chance). Enqueued
        again, its row would be bumped, and the claims in flight of the watchers that took over the
        dead one's rows would be stored, kept queued, and claimed once more as suspects (the dead
        claim counted as an attempt), each decoded first in a probe process."""
        w = self.watcher
        if not self.present(root):
            self.pause(root) if not root.paused else None
            return 0
        if not w.leadership.leads(str(root.path)):  # another watcher sharing the library walks it
            return 0
        prefix = str(root.path).rstrip(os.sep) + os.sep
        with w.library.session() as session:
            known = {
                r.path: r for r in session.execute(
                    select(Photo.path, Photo.size, Photo.mtime, Photo.status, Photo.tagged_run_id, Photo.sidecar_stat)
                    .where(Photo.path.startswith(prefix, autoescape=True))
                )
            }
        seen: set[str] = set()
        todo: list[str] = []
        now = time.time()
        for found in iter_photo_files(root.path, self.extensions, self.follow_symlinks):
            path = str(found.path)
            seen.add(path)
            if not self.wanted(path, root):
                continue
            row = known.get(path)
            if row is not None and row.size == found.size and row.mtime == found.mtime and (
                row.status == PhotoStatus.error.value
                or (row.status == PhotoStatus.ok.value and row.tagged_run_id is not None
                    and _sidecar_unchanged(row.sidecar_stat, found.path))
            ):
                continue
            if w.events.is_pending(path):
                continue
            if now - found.mtime < w.events.stable_seconds:
                w.events.track(path, PRIORITY_CATCH_UP)
            else:
                todo.append(path)
        queued: set[str] = set()
        if not requeue:  # a file already queued waits its turn: its claimer looks at it as it is then
            waiting = [p for p in todo if p not in known or known[p].status != PhotoStatus.error.value]
            for start in range(0, len(waiting), 500):
                queued |= w.queue.queued_paths(waiting[start:start + 500])
        if queued:
            todo = [p for p in todo if p not in queued]
        if todo:
            w.queue.enqueue(todo, "new", PRIORITY_CATCH_UP)
            w.stats.enqueued += len(todo)
            w.wakeup.set()
        gone = [p for p, r in known.items() if p not in seen and r.status != PhotoStatus.missing.value
                and not os.path.lexists(p)]
        missing = 0
        if gone and self.present(root):
            with w.library.session() as session:
                missing = w.library.mark_missing(session, gone)
            w.queue.forget(gone)
        log.info("reconciled %s: %d to tag, %d already queued, %d missing", root.path, len(todo), len(queued),
                 missing, extra={"event": "reconciled", "root": str(root.path), "count": len(todo),
                                 "queued": len(queued), "missing": missing})
        return len(todo)

    def reconcile_all(self) -> None:
        """The periodic pass (``watch.reconcile_minutes``) over every root that is not paused."""
        for root in self.states:
            if not root.paused:
                self.reconcile(root)
        self.last_reconcile = time.monotonic()

    def catch_up(self) -> None:
        """Reconcile every root; a root whose pass fails (the database busy, a concurrent writer) is
        tried again a few times, then the watcher stops (non-zero)."""
        stop_event = self.watcher.stop_event
        for root in self.states:
            for attempt in range(1, FATAL_AFTER + 1):
                if root.paused or stop_event.is_set():
                    break
                try:
                    self.reconcile(root)
                    break
                except Exception as exc:
                    if attempt == FATAL_AFTER:
                        raise
                    log.warning("catch-up pass of %s failed (%s: %s); trying again", root.path,
                                type(exc).__name__, exc, extra={"event": "reconcile_failed", "root": str(root.path),
                                                                "error": str(exc)})
                    stop_event.wait(min(0.5 * 2 ** attempt, 10.0))
        self.last_reconcile = time.monotonic()
        self._say_what_is_left()

    def _say_what_is_left(self) -> None:
        """After the catch-up pass, tell the user what happens now: the photos already there are
        being tagged (and a line says when they are done, see :meth:`Consumer.jobs`), or all is tagged."""
        w = self.watcher
        roots = ", ".join(str(r.path) for r in self.states if not r.paused)
        if not roots:
            return
        held = w.leadership.held()
        others = [str(r.path) for r in self.states if not r.paused and w.leadership.shared and str(r.path) not in held]
        if others:
            log.info("%s: walked by another watcher sharing this library (its catch-up and reconcile passes); "
                     "this one tags from the shared queue and takes over if that watcher stops",
                     ", ".join(others), extra={"event": "lead_elsewhere", "count": len(others)})
        waiting = w.stats.enqueued + w.events.pending_count()
        if waiting:
            w.consumer.catching_up = True
            log.info("catching up: %d photos in %s to tag (new or changed since the library saw them); "
                     "new photos are tagged as they arrive", waiting, roots,
                     extra={"event": "catching_up", "count": waiting})
        elif not others:
            log.info("up to date: every photo in %s is tagged; watching for new ones (Ctrl-C stops)", roots,
                     extra={"event": "caught_up", "count": 0})


def _sidecar_unchanged(recorded: str | None, photo: Path) -> bool:
    """The photo's sidecars are as they were when their keywords were last read (a library from
    before sidecar stats, None, counts as read when the photo has no sidecar)."""
    now = sidecar_stat(photo)
    return recorded == now or (recorded is None and now == "")
