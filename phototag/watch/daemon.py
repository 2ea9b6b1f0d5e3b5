"""The watcher: one object that ties the watch package together, and its two loops.

Threads (all in one process, one library database):

* **watchdog observer(s)** (:mod:`~phototag.watch.observers`) — they only put events on a queue.
* **the event thread** (:meth:`Watcher._event_loop`) — the only place that decides what an event
  means (:mod:`~phototag.watch.events`: debounce, moves, deletes, sidecars); checks every few
  seconds that the library database and each root are still there (:mod:`~phototag.watch.roots`:
  an unmounted drive pauses its root instead of marking its photos missing), runs the periodic
  reconcile pass and the background re-tag check (:mod:`~phototag.watch.hotswap`).
* **the calling thread** runs :meth:`phototag.pipeline.Pipeline.process` on a never-ending stream of
  jobs claimed from the queue (:mod:`~phototag.watch.consumer`); decoding happens in its pool,
  inference in the calling thread, and each batch commits its tags together with the removal of its
  queue rows. Between two pipeline runs it swaps in a new default model.

On start a reconcile pass enqueues whatever changed while the daemon was off, and rows left in the
queue by a crash are simply claimed again: nothing is lost, nothing is tagged twice.

**Failing loudly.** A problem with one file or one event is logged and the watch goes on. A problem
with the watcher itself — the catch-up pass failing again and again, housekeeping failing for
:data:`~phototag.watch.errors.FATAL_AFTER` passes in a row, the library database removed or replaced
under it, batches that cannot be stored — stops it with :class:`~phototag.watch.errors.WatchFatal`
raised from :meth:`Watcher.run` (``phototag watch`` exits non-zero, so systemd's
``Restart=on-failure`` starts it again).
"""

from __future__ import annotations

import logging
import os
import queue as queue_mod
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from phototag.config import Settings
from phototag.ingest.queue import WorkQueue
from phototag.library import Library
from phototag.pipeline import PersistError, Pipeline
from phototag.tagging.base import Tagger, TaggerError
from phototag.watch.consumer import Consumer
from phototag.watch.errors import FATAL_AFTER, WatchError, WatchFatal
from phototag.watch.events import EventTracker
from phototag.watch.hotswap import ModelFollower
from phototag.watch.leadership import Leadership
from phototag.watch.observers import Observers
from phototag.watch.roots import Roots

log = logging.getLogger("phototag.watch")

ROOT_CHECK_SECONDS = 2.0


@dataclass
class WatchStats:
    tagged: int = 0
    failed: int = 0
    moved: int = 0
    missing: int = 0
    enqueued: int = 0
    last_tagged: str | None = None
    last_tagged_at: str | None = None
    errors: list[tuple[str, str]] = field(default_factory=list)


class Watcher:
    """Watch ``roots`` and keep their photos tagged. :meth:`run` blocks until ``stop_event`` is set."""

    def __init__(
        self,
        library: Library,
        tagger: Tagger,
        roots: Iterable[Path | str],
        *,
        stable_seconds: float | None = None,
        batch_timeout: float | None = None,
        reconcile_minutes: float | None = None,
        polling: bool | None = None,
        poll_seconds: float | None = None,
        batch_size: int | None = None,
        decode_workers: int | None = None,
        stop_event: threading.Event | None = None,
        on_commit: Callable[[list[int]], None] | None = None,
        on_state: Callable[[dict], None] | None = None,
        follow_default_model: bool = True,
        retag_check_seconds: float | None = None,
        load_tagger: Callable[[Settings], Tagger] | None = None,
    ):
        settings = library.settings
        self.library = library
        self.tagger = tagger
        self.roots = Roots(self, roots, extensions={e.lower() for e in settings.get("scan.extensions") or []},
                           follow_symlinks=bool(settings.get("scan.follow_symlinks")), home=settings.home)
        if not len(self.roots):
            raise WatchError("no folders to watch: give them as arguments (phototag watch ~/Pictures)")

        def setting(value, key):
            # settings are validated and always present (phototag.config): a configured 0 is 0
            return float(value if value is not None else settings.get(key))

        self.batch_timeout = setting(batch_timeout, "watch.batch_timeout")
        self.reconcile_seconds = 60.0 * setting(reconcile_minutes, "watch.reconcile_minutes")
        self.stop_event = stop_event or threading.Event()
        self.on_state = on_state
        self.on_commit = on_commit  # the caller's: after each committed batch
        self.queue = WorkQueue(library)
        #: on a shared library (PostgreSQL) the watchers elect who walks each root (leadership)
        self.leadership = Leadership(library)
        self.stats = WatchStats()
        self.wakeup = threading.Event()  # something was enqueued (or we are stopping)
        self.events = EventTracker(self, stable_seconds=setting(stable_seconds, "watch.stable_seconds"),
                                   delete_delay=setting(None, "watch.delete_seconds"))
        self.observers = Observers(self.events.inbox, poll_seconds=setting(poll_seconds, "watch.poll_seconds"),
                                   force_polling=bool(settings.get("watch.polling") if polling is None else polling))
        self.consumer = Consumer(self)
        self.models = ModelFollower(
            self, settings, check_seconds=setting(retag_check_seconds, "retag.check_seconds"),
            follow_default_model=follow_default_model, load_tagger=load_tagger)
        self.pipeline = Pipeline(
            library, tagger, batch_size=batch_size, decode_workers=decode_workers,
            batch_timeout=self.batch_timeout, on_commit=self.consumer.committed,
            progress=self.consumer.progress,
        )
        self.next_root_check = 0.0  # monotonic; 0 = at the next turn of the event loop
        self.retry_seconds = 2.0  # pause after the model failed on a batch
        self.ready = threading.Event()  # set once watches are in place and the catch-up pass is queued
        self.fatal: BaseException | None = None  # why the watcher stopped itself (raised by run())
        self._db_identity = self._database_identity()

    @property
    def stable_seconds(self) -> float:
        return self.events.stable_seconds

    # ---- public ---------------------------------------------------------------------------
    def run(self) -> WatchStats:
        """Watch until ``stop_event`` is set (SIGTERM/SIGINT in the CLI); the batch in progress is finished."""
        event_thread = threading.Thread(target=self._event_thread_main, name="phototag-watch-events", daemon=True)
        try:
            self.roots.start()
            self.publish_state()
            event_thread.start()
            persist_failures = 0
            while not self.stop_event.is_set():
                self.models.swap()
                # the pipeline's own stop event: set by us to stop, or by the pipeline when a batch failed
                self.pipeline.stop_event = threading.Event()
                if self.stop_event.is_set():
                    break
                persist_failures = self._pipeline_run(persist_failures)
        except BaseException as exc:
            if self.fatal is None:
                self.fatal = exc
            raise
        finally:
            self.stop_event.set()
            self.wakeup.set()
            self.events.inbox.put(None)
            if event_thread.is_alive():
                event_thread.join(timeout=30)
            self.queue.close()
            self.leadership.close()
            self.models.drop_next()
            unsettled = self.events.pending_count()
            if unsettled:  # not enqueued: the next start's catch-up pass finds them on disk
                log.info("%d files were still settling (waiting to be stable): the next start picks them up",
                         unsettled, extra={"event": "unsettled", "count": unsettled})
            self.observers.stop()
            self.publish_state(stopped=True)
        if self.fatal is not None:  # the event thread stopped the watcher: that is a failure, not a stop
            raise WatchFatal(f"{type(self.fatal).__name__}: {self.fatal}") from self.fatal
        return self.stats

    def _pipeline_run(self, persist_failures: int) -> int:
        """One run of the pipeline over the consumer's job stream, until it stops (stopping, a new
        model, a failed batch). Returns the number of batches in a row that could not be stored."""
        consumer = self.consumer
        jobs = consumer.jobs()
        try:
            self.pipeline.process(jobs, consumer.report)
            persist_failures = 0
            # stopped: every job the pipeline took was committed. One handed over just as the
            # stop came was dropped by it unprocessed: its row stays queued, uncharged
            jobs.close()
            consumer.release(consumer.take_in_flight())
        except PersistError as exc:
            # the database failed, not the photos: no photo is charged; after a few in a row, stop
            flying = consumer.take_in_flight()
            persist_failures += 1
            log.error("%s", exc, extra={"event": "batch_failed", "error": str(exc)})
            try:
                consumer.release(flying)
            except Exception:
                log.debug("could not give the batch's claims back", exc_info=True)
            if persist_failures >= FATAL_AFTER:
                raise WatchFatal(f"{persist_failures} batches in a row could not be stored: {exc}") from exc
            self.stop_event.wait(self.retry_seconds)
        except TaggerError:
            # the model cannot be loaded at all: no photo is to blame, so none is charged an attempt
            consumer.release(consumer.take_in_flight())
            raise
        except Exception as exc:  # the model failed on a batch: rows stay queued and are retried
            log.error("tagging failed: %s: %s", type(exc).__name__, exc,
                      extra={"event": "batch_failed", "error": str(exc)})
            failed = consumer.take_in_flight()
            error = f"{type(exc).__name__}: {exc}"
            alone = consumer.suspect_in_flight
            if alone is not None and failed == [str(alone.path)]:
                consumer.fail_alone(alone, f"the model failed on it alone: {error}")
            else:  # several photos in flight: no evidence against any one of them
                self.queue.note_failure(failed, error)
            self.stop_event.wait(self.retry_seconds)
        finally:
            jobs.close()  # rows it claimed but never handed over are uncharged
            consumer.suspect_in_flight = None
        return persist_failures

    def stopping(self) -> bool:
        return self.stop_event.is_set() or self.pipeline.stop_event.is_set()

    def stop(self) -> None:
        self.stop_event.set()
        self.pipeline.stop_event.set()
        self.wakeup.set()
        self.events.inbox.put(None)

    def state(self) -> dict:
        return {
            "pid": os.getpid(),
            "model": self.tagger.name,
            "roots": [r.as_dict() for r in self.roots],
            "stable_seconds": self.stable_seconds,
            "pending": self.events.pending_count(),
            "tagged": self.stats.tagged,
            "failed": self.stats.failed,
            "last_tagged": self.stats.last_tagged,
            "last_tagged_at": self.stats.last_tagged_at,
        }

    def publish_state(self, stopped: bool = False) -> None:
        if self.on_state is not None:
            try:
                self.on_state({**self.state(), "stopped": stopped})
            except Exception:  # pragma: no cover - status is informative only
                log.debug("state callback failed", exc_info=True)

    # ---- failing loudly -------------------------------------------------------------------
    def _die(self, exc: BaseException, what: str) -> None:
        """Stop the watcher because it cannot go on; :meth:`run` raises :class:`WatchFatal`."""
        if self.fatal is None:
            self.fatal = exc
        log.error("%s: %s: %s; stopping (exit non-zero)", what, type(exc).__name__, exc,
                  exc_info=(type(exc), exc, exc.__traceback__), extra={"event": "fatal", "error": str(exc)})
        self.stop()

    def _database_identity(self) -> tuple[int, int] | None:
        if self.library.db.path is None:  # a server database (PostgreSQL): no file to watch
            return None
        try:
            st = os.stat(self.library.db.path)
        except OSError:
            return None
        return st.st_dev, st.st_ino

    def _check_database(self) -> None:
        """The library database must still be the file the watcher opened: removed or replaced, every
        later commit would go to a file nobody reads (work lost), so that is fatal."""
        if self._db_identity is None:
            return
        now = self._database_identity()
        if now != self._db_identity:
            raise WatchFatal(f"the library database {self.library.db.path} was "
                             + ("removed" if now is None else "replaced") + " while watching")

    # ---- the event thread -----------------------------------------------------------------
    def _event_thread_main(self) -> None:
        try:
            self.roots.catch_up()
            self.ready.set()
            self._event_loop()
        except BaseException as exc:  # never die silently: stop, and make run() (the process) fail
            self._die(exc, "the watch event thread failed")
        finally:
            self.ready.set()

    def _event_loop(self) -> None:
        events = self.events
        failures = 0
        while not self.stop_event.is_set():
            now = time.monotonic()
            deadlines = events.deadlines()
            next_due = min([self.next_root_check, *deadlines]) if deadlines else self.next_root_check
            timeout = max(0.0, min(next_due - now, ROOT_CHECK_SECONDS))
            try:
                event = events.inbox.get(timeout=timeout)
            except queue_mod.Empty:
                event = None
            try:
                while event is not None:
                    events.on_event(event)
                    event = events.inbox.get_nowait()
            except queue_mod.Empty:
                pass
            if self.stop_event.is_set():
                return
            try:
                now = time.monotonic()
                if now >= self.next_root_check:
                    self._check_database()
                    self.roots.check()
                    self.next_root_check = now + ROOT_CHECK_SECONDS
                events.settle(now)
                if self.reconcile_seconds > 0 and now - self.roots.last_reconcile >= self.reconcile_seconds:
                    self.roots.reconcile_all()
                self.models.check(time.monotonic())
                failures = 0
            except WatchFatal:
                raise
            except Exception as exc:  # a database hiccup must not end the watch; the next pass retries
                failures += 1
                log.exception("watch housekeeping failed (%d in a row)", failures,
                              extra={"event": "housekeeping_failed", "error": str(exc)})
                if failures >= FATAL_AFTER:
                    raise
                self.stop_event.wait(min(float(failures), ROOT_CHECK_SECONDS))
