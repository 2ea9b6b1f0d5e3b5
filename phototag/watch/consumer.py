"""The queue's consumer: claims from the work queue become the pipeline's jobs, in the calling thread.

A claimed row is settled here when it needs no model (gone, unchanged, moved, no photo: the scan's
rules, :meth:`phototag.pipeline.Pipeline.classify`) or handed to the pipeline, whose batch commit
settles it with the photo's tags. A path is never in flight twice. A crash is no evidence against
the photos that were in flight: a row claimed unfinished ``ISOLATE_AFTER`` times is decoded alone in
a probe process first, and only failures while alone count against it (:mod:`phototag.ingest.queue`).
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator

from sqlalchemy import select

from phototag import __version__
from phototag.db.models import Photo
from phototag.ingest.queue import REASON_RETAG, QueuedItem, model_key
from phototag.ingest.walk import FoundFile
from phototag.pipeline import Job, Report, probe_in_child

if TYPE_CHECKING:
    from phototag.watch.daemon import Watcher

log = logging.getLogger("phototag.watch")

IDLE_CLAIM_SECONDS = 30.0  # the consumer re-reads the queue at least this often when idle
#: the same on a shared library (PostgreSQL): rows other watchers enqueue, or leave behind when
#: killed, wake nobody here
SHARED_IDLE_CLAIM_SECONDS = 2.0
PROBE_TIMEOUT_SECONDS = 120.0  # a suspect photo whose decoding hangs this long counts as a failure


class Consumer:
    """Claims → jobs for the pipeline, and what the pipeline reports back (commits, unreadable files)."""

    def __init__(self, watcher: Watcher):
        self.watcher = watcher
        self.report = Report()  # the pipeline's running totals; errors are logged and dropped as they come
        self.paused_claims: set[str] = set()  # claimed under a paused root (or unreachable): not claimed again
        self.suspect_in_flight: QueuedItem | None = None  # a suspect alone in the pipeline
        self._in_flight: dict[str, object] = {}  # path → enqueued_at of the claim being worked on
        self._in_flight_lock = threading.Lock()
        self.catching_up = False  # the catch-up pass found photos to tag that are not done yet
        self.probe_timeout = PROBE_TIMEOUT_SECONDS

    # ---- in flight ------------------------------------------------------------------------------
    def take_in_flight(self) -> list[str]:
        """The paths in flight, which are not any more (the pipeline run ended)."""
        with self._in_flight_lock:
            flying = list(self._in_flight)
            self._in_flight.clear()
        return flying

    def _finished(self, paths: Iterable[str]) -> None:
        removed = False
        with self._in_flight_lock:
            for path in paths:
                removed = self._in_flight.pop(path, None) is not None or removed
        if removed:
            self.watcher.wakeup.set()  # a row enqueued again while this one was in flight may wait

    def release(self, items: list[QueuedItem] | list[str]) -> None:
        self.watcher.queue.release(items)

    # ---- the job stream ------------------------------------------------------------------------
    def _ending(self) -> bool:
        """Stop handing out jobs: the watcher stops, or a new model waits to be swapped in."""
        return self.watcher.stopping() or self.watcher.models.next_tagger is not None

    def jobs(self) -> Iterator[Job]:
        """Jobs claimed from the queue, classified (unchanged/moved need no model), forever.

        A path is never in flight twice: a row enqueued again while its first job is in the pipeline
        waits until that job is committed, and is then classified against what was stored."""
        w = self.watcher
        in_flight = self._in_flight
        with self._in_flight_lock:
            in_flight.clear()
        report = Report()
        while not self._ending():
            with self._in_flight_lock:
                flying = list(in_flight)
            if flying:  # jobs whose rows are gone (done, or moved away) are not in flight any more
                self._finished(set(flying) - w.queue.queued_paths(flying))
            with self._in_flight_lock:
                skip = self.paused_claims | set(in_flight)
            items = w.queue.claim(w.pipeline.batch_size, skip=skip, model=self.model_key())
            if (not items and self.catching_up and not flying and not w.events.pending_count()
                    and w.ready.is_set()):
                self._say_caught_up()
            if not items:
                idle = SHARED_IDLE_CLAIM_SECONDS if w.leadership.shared else IDLE_CLAIM_SECONDS
                for _ in range(int(idle)):
                    if w.wakeup.wait(1.0) or self._ending():
                        break
                w.wakeup.clear()
                continue
            waiting = list(items)  # claimed, not yet settled or handed over
            try:
                while waiting:
                    if self._ending():  # a new model: end this run
                        return
                    item = waiting.pop(0)
                    job = self.prepare(item, report)
                    if job is None:
                        continue
                    with self._in_flight_lock:
                        in_flight[str(item.path)] = item.enqueued_at
                    if item.isolated:
                        self.suspect_in_flight = item
                    yield job
                    if item.isolated:  # a suspect: alone in its batch, and wait for its outcome
                        while not w.stopping() and w.queue.still_queued({str(item.path): item.enqueued_at}):
                            w.stop_event.wait(0.2)
                        if not w.stopping():  # settled; else run() looks at what stopped the batch
                            self.suspect_in_flight = None
            finally:  # stopping, or closed by run() (the pipeline stopped pulling): give the rest back
                if waiting:
                    self.release(waiting)

    def _say_caught_up(self) -> None:
        """The catch-up pass's photos are done (the queue ran dry): say so once."""
        stats = self.watcher.stats
        self.catching_up = False
        log.info("caught up: %d photos tagged, %d could not be read; watching for new ones (Ctrl-C stops)",
                 stats.tagged, stats.failed, extra={"event": "caught_up", "count": stats.tagged})
        self.watcher.models.check_soon()  # background re-tags waited for the catch-up's photos

    def model_key(self) -> str:
        """What a photo set aside now fails with: this phototag, the model and its weights."""
        tagger = self.watcher.tagger
        return model_key(__version__, tagger.model_id, self.watcher.models.weights_sha256(tagger))

    # ---- one claimed row ------------------------------------------------------------------------
    def fail_alone(self, item: QueuedItem, error: str) -> None:
        """``item`` failed while alone in flight: evidence against it; set aside after enough of it."""
        w = self.watcher
        root = w.roots.root_of(str(item.path))
        set_aside = w.queue.fail_alone(item, error, root.path if root else None, self.model_key())
        w.stats.failed += set_aside
        log.log(logging.ERROR if set_aside else logging.WARNING,
                "%s %s: %s", "set aside" if set_aside else "failed alone:", item.path, error,
                extra={"event": "set_aside" if set_aside else "failed_alone", "path": str(item.path),
                       "error": error})

    def probe(self, item: QueuedItem) -> bool:
        """A suspect (claimed unfinished ``ISOLATE_AFTER`` times: crashes, kills) is decoded alone in
        a child process first. True when it may go on to the model in this process."""
        log.info("%s was in flight %d times when the work stopped unfinished: decoding it alone in a "
                 "probe process first", item.path, item.attempts, extra={"event": "probe", "path": str(item.path)})
        crash = probe_in_child(item.path, self.watcher.pipeline.max_pixels, self.probe_timeout)
        if crash is None:
            return True
        self.fail_alone(item, crash)
        return False

    def prepare(self, item: QueuedItem, report: Report) -> Job | None:
        """Turn a claimed row into a Job, or settle it here (gone, unchanged, moved, poison)."""
        w = self.watcher
        path = str(item.path)
        root = w.roots.root_of(path)
        if item.reason == REASON_RETAG and root is None:
            return self._prepare_retag_outside(item)
        if root is None:
            w.queue.forget([path])  # no longer under a watched root
            return None
        if root.paused:
            self.release([item])
            self.paused_claims.add(path)
            return None
        if item.isolated and os.path.isfile(path) and not self.probe(item):
            return None
        follow_symlinks = w.roots.follow_symlinks
        try:
            st = os.stat(path) if follow_symlinks else os.lstat(path)
            is_file = os.path.isfile(path) and not (os.path.islink(path) and not follow_symlinks)
        except OSError:
            st, is_file = None, False
        if st is None or not is_file or not w.roots.wanted(path, root):
            w.queue.done(item)  # vanished (its delete event marks it missing) or not a photo
            return None
        if item.reason == REASON_RETAG:  # unchanged on purpose: the model (a new default) must see it again
            return Job(item.path, root.path, REASON_RETAG, queued_at=item.enqueued_at)
        if item.set_aside_for is not None:  # set aside by another phototag or model: try it again
            w.queue.retry_set_aside(item)
            return Job(item.path, root.path, "changed", queued_at=item.enqueued_at)
        found = FoundFile(item.path, root.path, st.st_size, st.st_mtime)
        before = (report.failed, report.moved, report.unchanged)
        jobs = list(w.pipeline.classify([found], report))  # the scan's rules: unchanged / moved / hash
        if jobs:
            job = jobs[0]
            job.queued_at = item.enqueued_at
            return job
        if (report.failed, report.moved, report.unchanged) == before:
            # classify settled nothing: it saw the stop (SIGTERM) before looking at the file. The row is
            # not done; deleting it here would lose the photo. It stays queued, uncharged.
            self.release([item])
            return None
        if report.failed > before[0]:
            w.stats.failed += 1
            log.warning("cannot read %s: %s", path, report.errors[-1][1],
                        extra={"event": "error", "path": path, "error": report.errors[-1][1]})
        elif report.moved > before[1]:
            w.stats.moved += 1
            log.info("%s: same content as a vanished photo: moved (tags kept)", path,
                     extra={"event": "moved", "path": path})
        w.queue.done(item)
        return None

    def _prepare_retag_outside(self, item: QueuedItem) -> Job | None:
        """A background re-tag of a library photo outside the watched roots (``phototag scan`` put it
        there): re-tag it too. If its file cannot be reached (another drive, unmounted), the row stays
        queued but is not claimed again by this process: dropping it would only have it queued again
        at the next check."""
        path = str(item.path)
        with self.watcher.library.session() as session:
            photo_root = session.scalar(select(Photo.root).where(Photo.path == path))
        root = Path(photo_root) if photo_root else None
        if os.path.isfile(path):
            if item.isolated and not self.probe(item):
                return None
            return Job(item.path, root, REASON_RETAG, queued_at=item.enqueued_at)
        self.release([item])
        self.paused_claims.add(path)
        return None

    # ---- what the pipeline reports back ---------------------------------------------------------
    def progress(self, event: str, n: int) -> None:
        """After each batch (and each unchanged file): log the batch's unreadable files."""
        report, stats = self.report, self.watcher.stats
        if report.errors:
            self._finished(p for p, _ in report.errors)
            for path, error in report.errors:
                stats.failed += 1
                log.warning("cannot tag %s: %s", path, error, extra={"event": "error", "path": path, "error": error})
            report.errors.clear()

    def committed(self, photo_ids: list[int]) -> None:
        w = self.watcher
        stats = w.stats
        with w.library.session() as session:
            rows = session.execute(select(Photo.path, Photo.tagged_at).where(Photo.id.in_(photo_ids))).all()
        self._finished(r.path for r in rows)
        stats.tagged += len(rows)
        if rows:
            stats.last_tagged = rows[-1].path
            stats.last_tagged_at = rows[-1].tagged_at.isoformat() if rows[-1].tagged_at else None
        log.info("tagged %d photos", len(rows), extra={"event": "tagged", "count": len(rows),
                                                        "path": rows[-1].path if rows else None})
        if w.on_commit is not None:
            w.on_commit(photo_ids)
