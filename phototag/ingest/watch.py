"""``phototag watch``: keep a library tagged while photos arrive, move and disappear.

Threads (all in one process, one library database):

* **watchdog observer(s)** — inotify, or polling for network filesystems, ``--polling``, and roots
  for which inotify ran out of watches. They only put events on a queue.
* **the event thread** (:meth:`Watcher._event_loop`) — the only place that decides what an event
  means: it tracks new/changed files until their size and mtime have been stable for
  ``watch.stable_seconds`` and then *enqueues* them (:mod:`phototag.ingest.queue`, committed);
  applies moves (tags follow the file) and, after a short delay, deletes (photos marked missing, never
  purged); checks every few seconds that each root is still there (an unmounted drive pauses its root
  instead of marking its photos missing) and runs the periodic reconcile pass.
* **the calling thread** runs :meth:`phototag.pipeline.Pipeline.process` on a never-ending stream of
  jobs claimed from the queue (:meth:`Watcher._jobs`); decoding happens in its pool, inference in
  the calling thread, and each batch commits its tags together with the removal of its queue rows.

On start a reconcile pass enqueues whatever changed while the daemon was off, and rows left in the
queue by a crash are simply claimed again: nothing is lost, nothing is tagged twice. A crash is no
evidence against the photos that were in flight: a row claimed unfinished ``ISOLATE_AFTER`` times
is decoded alone in a probe process first, and only failures while alone count against it
(:mod:`phototag.ingest.queue`).

**Failing loudly.** A problem with one file or one event is logged and the watch goes on. A problem
with the watcher itself — the catch-up pass failing again and again, housekeeping failing for
:data:`FATAL_AFTER` passes in a row, the library database removed or replaced under it, batches that
cannot be stored — stops it with :class:`WatchFatal` raised from :meth:`Watcher.run` (``phototag
watch`` exits non-zero, so systemd's ``Restart=on-failure`` starts it again).

**Background re-tagging** (:meth:`Watcher._retag_housekeeping`, in the event thread every
``retag.check_seconds``): ``config.toml`` is read again; when ``default_model`` changed the tagger is
rebuilt (:func:`phototag.learn.versions.load_model`) and handed to the calling thread between two
pipeline runs; then :func:`phototag.retag.schedule_background_retag` queues the photos that are due
(``reason="retag"``, lowest priority). A ``retag`` row reaches the model even when its file is
unchanged; one naming a model (``phototag retag --model X``) is left to that command.
"""

from __future__ import annotations

import datetime as dt
import errno
import json
import logging
import os
import queue as queue_mod
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

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
    FileSystemEventHandler,
)
from watchdog.observers.inotify import InotifyObserver
from watchdog.observers.polling import PollingObserver

from phototag import __version__
from phototag.config import ConfigError, Settings, load_settings
from phototag.db.models import Photo, PhotoStatus, WorkItem, utcnow
from phototag.ingest.keywords import sidecar_stat
from phototag.ingest.queue import (
    PRIORITY_CATCH_UP,
    PRIORITY_NEW,
    QueuedItem,
    WorkQueue,
    model_key,
)
from phototag.ingest.walk import FoundFile, is_ignored_name, is_skipped_dir, iter_photo_files
from phototag.library import Library
from phototag.pipeline import Job, PersistError, Pipeline, Report, probe_in_child
from phototag.tagging.base import Tagger, TaggerError

log = logging.getLogger("phototag.watch")

#: filesystem types on which inotify sees no changes made by other machines: watched by polling
NETWORK_FILESYSTEMS = {
    "nfs", "nfs4", "cifs", "smb", "smb2", "smb3", "smbfs", "9p", "afs", "ncpfs", "coda", "ceph",
    "glusterfs", "lustre", "gpfs", "davfs", "fuse.sshfs", "sshfs", "fuse.rclone", "fuse.s3fs",
    "fuse.gcsfuse", "fuse.glusterfs", "fuse.cephfs", "fuse.davfs2", "virtiofs", "vboxsf", "vmhgfs",
    "fuse.vmhgfs-fuse", "prl_fs", "drvfs",
}

WATCHED_EVENTS = [
    FileCreatedEvent, FileModifiedEvent, FileClosedEvent, FileMovedEvent, FileDeletedEvent,
    DirCreatedEvent, DirMovedEvent, DirDeletedEvent,
]

ROOT_CHECK_SECONDS = 2.0
IDLE_CLAIM_SECONDS = 30.0  # the consumer re-reads the queue at least this often when idle
FATAL_AFTER = 5  # housekeeping passes failing in a row, catch-up tries, batches not stored: then stop
PROBE_TIMEOUT_SECONDS = 120.0  # a suspect photo whose decoding hangs this long counts as a failure


class WatchError(Exception):
    """``phototag watch`` cannot start (no roots, another watcher running, …)."""


class WatchFatal(Exception):
    """The watcher cannot go on (its database failed or vanished, its event thread died): it stopped,
    and the process must exit non-zero so that its supervisor restarts it."""


# ---- where a root lives -------------------------------------------------------------------------
def _unescape_mount(field_: str) -> str:
    # /proc/mounts escapes space, tab, newline and backslash as octal
    out, i = [], 0
    while i < len(field_):
        octal = field_[i + 1:i + 4]
        if field_[i] == "\\" and len(octal) == 3 and all(c in "01234567" for c in octal):
            out.append(chr(int(octal, 8)))
            i += 4
        else:
            out.append(field_[i])
            i += 1
    return "".join(out)


def filesystem_type(path: Path | str, mounts_text: str | None = None) -> str | None:
    """The filesystem type (``ext4``, ``nfs4``, ``fuse.sshfs`` …) that ``path`` lives on, from
    ``/proc/mounts`` (or ``mounts_text``); None when unknown (not Linux)."""
    if mounts_text is None:
        try:
            mounts_text = Path("/proc/mounts").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None
    path = os.path.realpath(path)
    best, best_type = "", None
    for line in mounts_text.splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        mount_point = _unescape_mount(parts[1])
        inside = path == mount_point or path.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best):
            best, best_type = mount_point, parts[2]
    return best_type


def is_network_filesystem(path: Path | str, mounts_text: str | None = None) -> bool:
    fs = filesystem_type(path, mounts_text)
    return fs is not None and (fs in NETWORK_FILESYSTEMS or fs.split(".")[0] in {"nfs", "cifs", "smb3"})


# ---- state ---------------------------------------------------------------------------------------
@dataclass
class RootState:
    path: Path
    device: int | None = None  # st_dev when it was last seen: a different one means another drive
    paused: bool = False
    mode: str = "inotify"  # inotify | polling
    why_polling: str | None = None
    watch: object | None = None  # the watchdog ObservedWatch
    observer: object | None = None

    def as_dict(self) -> dict:
        return {"path": str(self.path), "paused": self.paused, "mode": self.mode, "why_polling": self.why_polling}


@dataclass
class _Pending:
    deadline: float
    size: int
    mtime: float
    priority: int = PRIORITY_NEW


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


class _Handler(FileSystemEventHandler):
    def __init__(self, sink: queue_mod.Queue):
        self.sink = sink

    def on_any_event(self, event: FileSystemEvent) -> None:
        self.sink.put(event)


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
        self.roots = [RootState(Path(r).expanduser().resolve()) for r in roots]
        if not self.roots:
            raise WatchError("no folders to watch: give them as arguments (phototag watch ~/Pictures)")

        def setting(value, key):
            # settings are validated and always present (phototag.config): a configured 0 is 0
            return float(value if value is not None else settings.get(key))

        self.stable_seconds = setting(stable_seconds, "watch.stable_seconds")
        self.batch_timeout = setting(batch_timeout, "watch.batch_timeout")
        self.reconcile_seconds = 60.0 * setting(reconcile_minutes, "watch.reconcile_minutes")
        self.poll_seconds = setting(poll_seconds, "watch.poll_seconds")
        self.delete_delay = setting(None, "watch.delete_seconds")
        #: re-read config.toml and look for photos due for re-tagging this often (0: never)
        self.retag_check_seconds = setting(retag_check_seconds, "retag.check_seconds")
        #: rebuild the tagger when ``default_model`` changes (False for ``phototag watch --model X``)
        self.follow_default_model = follow_default_model
        self._load_tagger = load_tagger
        self.force_polling = bool(settings.get("watch.polling") if polling is None else polling)
        self.extensions = {e.lower() for e in settings.get("scan.extensions") or []}
        self.follow_symlinks = bool(settings.get("scan.follow_symlinks"))
        self.home = settings.home
        self.stop_event = stop_event or threading.Event()
        self.on_state = on_state
        self.queue = WorkQueue(library)
        self.stats = WatchStats()
        self._user_on_commit = on_commit
        self.report = Report()  # the pipeline's running totals; errors are logged and dropped as they come
        self._batch_size_arg = batch_size
        self.pipeline = Pipeline(
            library, tagger, batch_size=batch_size, decode_workers=decode_workers,
            batch_timeout=self.batch_timeout, on_commit=self._committed,
            progress=self._progress,
        )
        self._events: queue_mod.Queue = queue_mod.Queue()
        self._handler = _Handler(self._events)
        self._pending: dict[str, _Pending] = {}
        self._deletes: dict[str, tuple[float, bool]] = {}  # path → (deadline, is_dir)
        self._sidecar_only: set[str] = set()  # pending only because their sidecar had an event
        self._wakeup = threading.Event()  # something was enqueued (or we are stopping)
        self._inotify: InotifyObserver | None = None
        self._polling: PollingObserver | None = None
        self._paused_claims: set[str] = set()
        self._suspect_in_flight: QueuedItem | None = None  # a suspect alone in the pipeline
        self._in_flight: dict[str, object] = {}  # path → enqueued_at of the claim being worked on
        self._in_flight_lock = threading.Lock()
        self._last_reconcile = 0.0
        self._next_root_check = 0.0
        self.retry_seconds = 2.0  # pause after the model failed on a batch
        self._next_retag_check = 0.0  # monotonic; the first check runs right after the catch-up pass
        self._settings = settings  # config.toml as last read (re-read every retag_check_seconds)
        self._model_loaded_for = settings.default_model  # the default model name the tagger was built for
        self._next_tagger: Tagger | None = None  # built by the event thread, swapped in by run()
        self._sha_cache: tuple[Tagger, str] | None = None
        self._logged: set[str] = set()  # messages logged once (bad retag settings, a model that won't load)
        self.ready = threading.Event()  # set once watches are in place and the catch-up pass is queued
        self._catching_up = False  # the catch-up pass found photos to tag that are not done yet
        self.fatal: BaseException | None = None  # why the watcher stopped itself (raised by run())
        self._db_identity = self._database_identity()
        self.probe_timeout = PROBE_TIMEOUT_SECONDS

    # ---- public ---------------------------------------------------------------------------
    def run(self) -> WatchStats:
        """Watch until ``stop_event`` is set (SIGTERM/SIGINT in the CLI); the batch in progress is finished."""
        event_thread = threading.Thread(target=self._event_thread_main, name="phototag-watch-events", daemon=True)
        try:
            self._start_observers()
            self._publish_state()
            event_thread.start()
            persist_failures = 0
            while not self.stop_event.is_set():
                self._swap_tagger()
                # the pipeline's own stop event: set by us to stop, or by the pipeline when a batch failed
                self.pipeline.stop_event = threading.Event()
                if self.stop_event.is_set():
                    break
                jobs = self._jobs()
                try:
                    self.pipeline.process(jobs, self.report)
                    persist_failures = 0
                    # stopped: every job the pipeline took was committed. One handed over just as the
                    # stop came was dropped by it unprocessed: its row stays queued, uncharged
                    jobs.close()
                    with self._in_flight_lock:
                        dropped = list(self._in_flight)
                        self._in_flight.clear()
                    self._unclaim_paths(dropped)
                except PersistError as exc:
                    # the database failed, not the photos: no photo is charged; after a few in a row, stop
                    with self._in_flight_lock:
                        flying = list(self._in_flight)
                        self._in_flight.clear()
                    persist_failures += 1
                    log.error("%s", exc, extra={"event": "batch_failed", "error": str(exc)})
                    try:
                        self._unclaim_paths(flying)
                    except Exception:
                        log.debug("could not give the batch's claims back", exc_info=True)
                    if persist_failures >= FATAL_AFTER:
                        raise WatchFatal(f"{persist_failures} batches in a row could not be stored: {exc}") from exc
                    self.stop_event.wait(self.retry_seconds)
                except TaggerError:
                    # the model cannot be loaded at all: no photo is to blame, so none is charged an attempt
                    with self._in_flight_lock:
                        flying = list(self._in_flight)
                        self._in_flight.clear()
                    self._unclaim_paths(flying)
                    raise
                except Exception as exc:  # the model failed on a batch: rows stay queued and are retried
                    log.error("tagging failed: %s: %s", type(exc).__name__, exc,
                              extra={"event": "batch_failed", "error": str(exc)})
                    with self._in_flight_lock:
                        failed = list(self._in_flight)
                        self._in_flight.clear()
                    error = f"{type(exc).__name__}: {exc}"
                    alone = self._suspect_in_flight
                    if alone is not None and failed == [str(alone.path)]:
                        self._fail_alone(alone, f"the model failed on it alone: {error}")
                    else:  # several photos in flight: no evidence against any one of them
                        self.queue.note_failure(failed, error)
                    self.stop_event.wait(self.retry_seconds)
                finally:
                    jobs.close()  # rows it claimed but never handed over are uncharged
                    self._suspect_in_flight = None
        except BaseException as exc:
            if self.fatal is None:
                self.fatal = exc
            raise
        finally:
            self.stop_event.set()
            self._wakeup.set()
            self._events.put(None)
            if event_thread.is_alive():
                event_thread.join(timeout=30)
            self.queue.close()
            pending_tagger, self._next_tagger = self._next_tagger, None
            if pending_tagger is not None:
                pending_tagger.close()
            if self._pending:  # not enqueued: the next start's catch-up pass finds them on disk
                log.info("%d files were still settling (waiting to be stable): the next start picks them up",
                         len(self._pending), extra={"event": "unsettled", "count": len(self._pending)})
            self._stop_observers()
            self._publish_state(stopped=True)
        if self.fatal is not None:  # the event thread stopped the watcher: that is a failure, not a stop
            raise WatchFatal(f"{type(self.fatal).__name__}: {self.fatal}") from self.fatal
        return self.stats

    def _die(self, exc: BaseException, what: str) -> None:
        """Stop the watcher because it cannot go on; :meth:`run` raises :class:`WatchFatal`."""
        if self.fatal is None:
            self.fatal = exc
        log.error("%s: %s: %s; stopping (exit non-zero)", what, type(exc).__name__, exc,
                  exc_info=(type(exc), exc, exc.__traceback__), extra={"event": "fatal", "error": str(exc)})
        self.stop()

    def _database_identity(self) -> tuple[int, int] | None:
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

    def _stopping(self) -> bool:
        return self.stop_event.is_set() or self.pipeline.stop_event.is_set()

    def stop(self) -> None:
        self.stop_event.set()
        self.pipeline.stop_event.set()
        self._wakeup.set()
        self._events.put(None)

    def state(self) -> dict:
        return {
            "pid": os.getpid(),
            "model": self.tagger.name,
            "roots": [r.as_dict() for r in self.roots],
            "stable_seconds": self.stable_seconds,
            "pending": len(self._pending),
            "tagged": self.stats.tagged,
            "failed": self.stats.failed,
            "last_tagged": self.stats.last_tagged,
            "last_tagged_at": self.stats.last_tagged_at,
        }

    # ---- observers ------------------------------------------------------------------------
    def _start_observers(self) -> None:
        for root in self.roots:
            if not self._root_present(root):
                root.paused = True
                log.warning("root %s is not there (unmounted?): paused until it comes back", root.path,
                            extra={"event": "root_paused", "root": str(root.path)})
                continue
            root.device = root.path.stat().st_dev
            self._schedule(root)

    def _schedule(self, root: RootState) -> None:
        if self.force_polling:
            root.mode, root.why_polling = "polling", "--polling"
        elif is_network_filesystem(root.path):
            root.mode, root.why_polling = "polling", f"network filesystem ({filesystem_type(root.path)})"
        if root.mode == "inotify":
            try:
                if self._inotify is None:
                    self._inotify = InotifyObserver()
                    self._inotify.start()
                root.watch = self._inotify.schedule(
                    self._handler, str(root.path), recursive=True, event_filter=WATCHED_EVENTS,
                    follow_symlink=False,
                )
                root.observer = self._inotify
            except OSError as exc:
                if exc.errno not in (errno.ENOSPC, errno.EMFILE):
                    raise
                root.mode = "polling"
                root.why_polling = f"{exc.strerror or exc} (raise fs.inotify.max_user_watches to use inotify)"
                log.warning("%s: %s; watching by polling every %.0f s", root.path, root.why_polling,
                            self.poll_seconds, extra={"event": "polling_fallback", "root": str(root.path)})
        if root.mode == "polling":
            if self._polling is None:
                self._polling = PollingObserver(timeout=self.poll_seconds)
                self._polling.start()
            root.watch = self._polling.schedule(self._handler, str(root.path), recursive=True,
                                                event_filter=WATCHED_EVENTS)
            root.observer = self._polling
        log.info("watching %s (%s%s)", root.path, root.mode, f": {root.why_polling}" if root.why_polling else "",
                 extra={"event": "watching", "root": str(root.path), "mode": root.mode})

    def _unschedule(self, root: RootState) -> None:
        if root.watch is not None and root.observer is not None:
            try:
                root.observer.unschedule(root.watch)
            except Exception:  # the watch died with its directory
                pass
        root.watch = root.observer = None

    def _stop_observers(self) -> None:
        for obs in (self._inotify, self._polling):
            if obs is not None:
                try:
                    obs.stop()
                    obs.join(timeout=10)
                except Exception:  # pragma: no cover - shutting down anyway
                    log.debug("observer stop failed", exc_info=True)

    # ---- paths ----------------------------------------------------------------------------
    def _root_of(self, path: str) -> RootState | None:
        best = None
        for root in self.roots:
            prefix = str(root.path).rstrip(os.sep) + os.sep
            if (path == str(root.path) or path.startswith(prefix)) and (
                best is None or len(str(root.path)) > len(str(best.path))
            ):
                best = root
        return best

    def _wanted(self, path: str, root: RootState | None = None) -> bool:
        """Is this a photo file we tag (by name: hidden, temp, sidecar, caches and our home are not)?"""
        root = root or self._root_of(path)
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

    def _root_present(self, root: RootState) -> bool:
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
        with self.library.session() as session:
            known = session.scalar(
                select(Photo.id).where(Photo.path.startswith(prefix, autoescape=True),
                                       Photo.status != PhotoStatus.missing.value).limit(1)
            )
        return known is None

    # ---- the event thread -----------------------------------------------------------------
    def _event_thread_main(self) -> None:
        try:
            self._catch_up()
            self.ready.set()
            self._event_loop()
        except BaseException as exc:  # never die silently: stop, and make run() (the process) fail
            self._die(exc, "the watch event thread failed")
        finally:
            self.ready.set()

    def _catch_up(self) -> None:
        """Reconcile every root; a root whose pass fails (the database busy, a concurrent writer) is
        tried again a few times, then the watcher stops (non-zero)."""
        for root in self.roots:
            for attempt in range(1, FATAL_AFTER + 1):
                if root.paused or self.stop_event.is_set():
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
                    self.stop_event.wait(min(0.5 * 2 ** attempt, 10.0))
        self._last_reconcile = time.monotonic()
        self._say_what_is_left()

    def _say_what_is_left(self) -> None:
        """After the catch-up pass, tell the user what happens now: the photos already there are
        being tagged (and a line says when they are done, see :meth:`_jobs`), or all is tagged."""
        roots = ", ".join(str(r.path) for r in self.roots if not r.paused)
        if not roots:
            return
        waiting = self.stats.enqueued + len(self._pending)
        if waiting:
            self._catching_up = True
            log.info("catching up: %d photos in %s to tag (new or changed since the library saw them); "
                     "new photos are tagged as they arrive", waiting, roots,
                     extra={"event": "catching_up", "count": waiting})
        else:
            log.info("up to date: every photo in %s is tagged; watching for new ones (Ctrl-C stops)", roots,
                     extra={"event": "caught_up", "count": 0})

    def _say_caught_up(self) -> None:
        """The catch-up pass's photos are done (the queue ran dry): say so once."""
        self._catching_up = False
        log.info("caught up: %d photos tagged, %d could not be read; watching for new ones (Ctrl-C stops)",
                 self.stats.tagged, self.stats.failed,
                 extra={"event": "caught_up", "count": self.stats.tagged})

    def _event_loop(self) -> None:
        failures = 0
        while not self.stop_event.is_set():
            now = time.monotonic()
            deadlines = [p.deadline for p in self._pending.values()] + [d for d, _ in self._deletes.values()]
            next_due = min([self._next_root_check, *deadlines]) if deadlines else self._next_root_check
            timeout = max(0.0, min(next_due - now, ROOT_CHECK_SECONDS))
            try:
                event = self._events.get(timeout=timeout)
            except queue_mod.Empty:
                event = None
            try:
                while event is not None:
                    self._on_event(event)
                    event = self._events.get_nowait()
            except queue_mod.Empty:
                pass
            if self.stop_event.is_set():
                return
            try:
                now = time.monotonic()
                if now >= self._next_root_check:
                    self._check_database()
                    self._check_roots()
                    self._next_root_check = now + ROOT_CHECK_SECONDS
                self._settle_deletes(now)
                self._settle_pending(now)
                if self.reconcile_seconds > 0 and now - self._last_reconcile >= self.reconcile_seconds:
                    for root in self.roots:
                        if not root.paused:
                            self.reconcile(root)
                    self._last_reconcile = time.monotonic()
                self._retag_housekeeping(time.monotonic())
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

    # ---- background re-tagging --------------------------------------------------------------
    def _log_once(self, level: int, message: str, *args, **kwargs) -> None:
        text = message % args if args else message
        if text not in self._logged:
            self._logged.add(text)
            log.log(level, "%s", text, **kwargs)

    def _reload_settings(self) -> Settings:
        """config.toml read again (the daemon's own settings stay as they were at start, but the default
        model and the [retag] table are followed); a file that does not parse keeps the last good one."""
        try:
            self._settings = load_settings(self.library.settings.home)
        except ConfigError as exc:
            self._log_once(logging.ERROR, "%s (keeping the settings read before)", exc,
                           extra={"event": "config_error", "error": str(exc)})
        return self._settings

    def _retag_housekeeping(self, now: float) -> None:
        """Every ``retag_check_seconds``: follow a new ``default_model``, then queue photos due for
        re-tagging (:func:`phototag.retag.schedule_background_retag`). Runs in the event thread."""
        if self.retag_check_seconds <= 0 or now < self._next_retag_check:
            return
        self._next_retag_check = now + self.retag_check_seconds
        from phototag.retag import RetagError, schedule_background_retag

        settings = self._reload_settings()
        default = settings.default_model
        if self.follow_default_model and default != self._model_loaded_for and self._next_tagger is None:
            self._rebuild_tagger(settings)
        if self._next_tagger is not None:
            return  # queue re-tags once the new model is in place
        tagger = self.tagger
        if tagger.name != default:  # --model X, or the new default would not load: re-tagging would loop
            self._log_once(logging.WARNING, "background re-tagging is off: this watcher tags with %s, "
                           "the default model is %s", tagger.name, default, extra={"event": "retag_off"})
            return
        try:
            queued = schedule_background_retag(self.library, settings, now=dt.datetime.now().astimezone(),
                                               weights_sha256=self._weights_sha256(tagger))
        except RetagError as exc:  # bad retag.every / retag.window: say so once, keep watching
            self._log_once(logging.ERROR, "%s", exc, extra={"event": "retag_error", "error": str(exc)})
            return
        if queued:
            log.info("queued %d photos for background re-tagging with %s", queued, tagger.name,
                     extra={"event": "retag_queued", "count": queued, "model": tagger.name})
            self._wakeup.set()

    def _weights_sha256(self, tagger: Tagger) -> str:
        """The tagger's weights hash, computed once per tagger (some hash their weights file on each call)."""
        if self._sha_cache is None or self._sha_cache[0] is not tagger:
            self._sha_cache = (tagger, tagger.weights_sha256)
        return self._sha_cache[1]

    def _rebuild_tagger(self, settings: Settings) -> None:
        """Build the tagger of the new default model; :meth:`run` swaps it in between two pipeline runs.
        A model that does not load is logged (once) and tried again at the next check."""
        from phototag.learn.versions import load_model

        name = settings.default_model
        try:
            tagger = (self._load_tagger or load_model)(settings)
        except Exception as exc:
            self._log_once(logging.ERROR, "the new default model %s does not load (%s: %s); still tagging "
                           "with %s", name, type(exc).__name__, exc, self.tagger.name,
                           extra={"event": "model_error", "model": name, "error": str(exc)})
            return
        self._model_loaded_for = name
        current = self.tagger
        if (tagger.name, self._weights_sha256(tagger)) == (current.name, self._weights_sha256(current)):
            tagger.close()  # e.g. changed and changed back: nothing to swap
            return
        log.info("default model is now %s: switching from %s", tagger.name, current.name,
                 extra={"event": "model_changed", "model": tagger.name})
        self._next_tagger = tagger
        self._wakeup.set()  # the consumer ends its pipeline run; run() swaps the tagger

    def _swap_tagger(self) -> None:
        """In the calling thread, between two pipeline runs: use the tagger the event thread built."""
        tagger, self._next_tagger = self._next_tagger, None
        if tagger is None:
            return
        old, self.tagger = self.tagger, tagger
        self.pipeline.tagger = tagger
        settings = self.library.settings
        self.pipeline.batch_size = (self._batch_size_arg or int(settings.get("batch_size") or 0)
                                    or tagger.batch_size)
        try:
            old.close()
        except Exception:  # pragma: no cover - releasing memory only
            log.debug("closing the old tagger failed", exc_info=True)
        self._next_retag_check = 0.0  # queue what the new model has to re-tag without waiting a minute
        self._publish_state()

    def _on_event(self, event: FileSystemEvent) -> None:
        try:
            src = os.fsdecode(event.src_path)
            if not event.is_directory:  # a sidecar created, changed, saved over (moved in) or deleted
                for path in (src, os.fsdecode(event.dest_path) if isinstance(event, FileMovedEvent) else ""):
                    for photo in self._photos_of_sidecar(path):
                        self._track(photo, sidecar=True)
            if isinstance(event, (DirMovedEvent, FileMovedEvent)):
                self._on_moved(src, os.fsdecode(event.dest_path), event.is_directory)
            elif isinstance(event, DirDeletedEvent) or isinstance(event, FileDeletedEvent):
                self._on_deleted(src, event.is_directory)
            elif isinstance(event, DirCreatedEvent):
                self._track_tree(src)
            elif isinstance(event, (FileCreatedEvent, FileModifiedEvent, FileClosedEvent)):
                self._track(src)
        except Exception:
            log.exception("could not handle %s", event)

    def _photos_of_sidecar(self, path: str) -> list[str]:
        """The photos an XMP sidecar belongs to (two-way sync, docs/sync.md): ``a.jpg.xmp`` is a.jpg's,
        ``a.xmp`` that of every photo named ``a.<ext>`` in its folder. Empty for any other file."""
        folder, name = os.path.split(path)
        if not name.lower().endswith(".xmp") or name.startswith("."):
            return []
        stem = name[:-4]
        photos = [os.path.join(folder, stem)] if os.path.splitext(stem)[1].lower() in self.extensions else []
        try:
            entries = os.listdir(folder)
        except OSError:
            entries = []
        photos += [os.path.join(folder, e) for e in entries
                   if os.path.splitext(e)[0] == stem and os.path.splitext(e)[1].lower() in self.extensions]
        return [p for p in dict.fromkeys(photos) if os.path.isfile(p)]

    def _unchanged_sidecars(self, paths: list[str]) -> set[str]:
        """Of ``paths``, the photos tracked only for a sidecar event whose sidecars are as phototag last
        read or wrote them (the event was phototag's own export): nothing to read."""
        only = [p for p in paths if p in self._sidecar_only]
        self._sidecar_only.difference_update(only)
        if not only:
            return set()
        with self.library.session() as session:
            stored = dict(session.execute(select(Photo.path, Photo.sidecar_stat).where(Photo.path.in_(only))).all())
        return {p for p in only if stored.get(p) is not None and stored[p] == sidecar_stat(p)}

    def _track(self, path: str, priority: int = PRIORITY_NEW, sidecar: bool = False) -> None:
        root = self._root_of(path)
        if root is None or root.paused or not self._wanted(path, root):
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
        if os.path.islink(path) and not self.follow_symlinks:
            return
        self._deletes.pop(path, None)
        self._pending[path] = _Pending(time.monotonic() + self.stable_seconds, st.st_size, st.st_mtime, priority)

    def _track_tree(self, folder: str) -> None:
        """A folder appeared (created, or moved in from outside): its files may have no events of their own."""
        root = self._root_of(folder)
        if root is None or root.paused:
            return
        rel = os.path.relpath(folder, root.path)
        if rel != "." and any(is_skipped_dir(p) for p in rel.split(os.sep)):
            return
        for found in iter_photo_files(folder, self.extensions, self.follow_symlinks):
            self._track(str(found.path))

    def _settle_pending(self, now: float) -> None:
        due = [p for p, s in self._pending.items() if s.deadline <= now]
        if not due:
            return
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
            self.queue.enqueue(paths, "new", priority)
            self.stats.enqueued += len(paths)
            log.debug("enqueued %d stable files", len(paths), extra={"event": "enqueued", "count": len(paths)})
        if stable:
            self._wakeup.set()

    # ---- moves and deletes ------------------------------------------------------------------
    def _on_moved(self, src: str, dest: str, is_dir: bool) -> None:
        src_root, dest_root = self._root_of(src), self._root_of(dest)
        if src_root is not None and src_root.path == Path(src):  # the root itself moved away
            self._next_root_check = 0.0
            return
        if dest_root is None or dest_root.paused:
            self._on_deleted(src, is_dir)
            return
        if src_root is None or src_root.paused:
            self._track_tree(dest) if is_dir else self._track(dest)
            return
        if is_dir:
            self._move_tree(src, dest, dest_root)
            return
        # a pending file keeps being tracked under its new name
        pending = self._pending.pop(src, None)
        if not self._wanted(dest, dest_root):
            self._on_deleted(src, False)
            return
        if not self._wanted(src, src_root) or pending is not None:
            self._track(dest)  # e.g. "photo.jpg.part" → "photo.jpg", or an atomic save
            return
        moved = False
        with self.library.session() as session:
            photo = self.library.photo_by_path(session, src)
            if photo is not None and photo.status == PhotoStatus.error.value:
                photo = None
                self._on_deleted(src, False)
            if photo is not None:
                try:
                    mtime = os.stat(dest).st_mtime
                except OSError:
                    mtime = photo.mtime
                self.library.move_photo(session, photo, Path(dest), dest_root.path, mtime)
                moved = True
        requeued = self.queue.rename(src, dest)
        if moved:
            self.stats.moved += 1
            log.info("moved %s → %s (tags kept)", src, dest, extra={"event": "moved", "path": dest, "from": src})
        if requeued:
            self._wakeup.set()
        if not moved and not requeued:
            self._track(dest)

    def _move_tree(self, src: str, dest: str, dest_root: RootState) -> None:
        """A folder was renamed or moved inside the watched roots: every photo under it follows."""
        src_prefix, dest_prefix = src.rstrip(os.sep) + os.sep, dest.rstrip(os.sep) + os.sep
        n = 0
        with self.library.session() as session:
            photos = session.scalars(select(Photo).where(Photo.path.startswith(src_prefix, autoescape=True))).all()
            for photo in photos:
                new_path = dest_prefix + photo.path[len(src_prefix):]
                if not self._wanted(new_path, dest_root):
                    continue
                self.library.move_photo(session, photo, Path(new_path), dest_root.path, photo.mtime or 0.0)
                n += 1
            rows = session.scalars(select(WorkItem).where(WorkItem.path.startswith(src_prefix, autoescape=True))).all()
            for row in rows:
                row.path = dest_prefix + row.path[len(src_prefix):]
                row.enqueued_at = utcnow()
        for path in [p for p in self._pending if p.startswith(src_prefix)]:
            del self._pending[path]
        self.stats.moved += n
        if n:
            log.info("moved folder %s → %s (%d photos keep their tags)", src, dest, n,
                     extra={"event": "moved_folder", "path": dest, "from": src, "count": n})
        self._track_tree(dest)  # files without a row yet (and the ones the event raced with)
        self._wakeup.set()

    def _on_deleted(self, path: str, is_dir: bool) -> None:
        root = self._root_of(path)
        if root is None:
            return
        if root.path == Path(path):
            self._next_root_check = 0.0  # the root itself: paused by the root check, nothing marked
            return
        self._pending.pop(path, None)
        if is_dir:
            prefix = path.rstrip(os.sep) + os.sep
            for p in [p for p in self._pending if p.startswith(prefix)]:
                del self._pending[p]
        elif not self._wanted(path, root):
            return
        self._deletes[path] = (time.monotonic() + self.delete_delay, is_dir)

    def _settle_deletes(self, now: float) -> None:
        due = [(p, d) for p, (deadline, d) in self._deletes.items() if deadline <= now]
        if not due:
            return
        files, prefixes = [], []
        for path, is_dir in due:
            del self._deletes[path]
            root = self._root_of(path)
            if root is None or root.paused:
                continue
            if not self._root_present(root):  # the drive went away: that is not a deletion
                self._pause(root)
                continue
            if os.path.lexists(path):  # it came back (an atomic save); its own events track it
                continue
            (prefixes if is_dir else files).append(path)
        if not files and not prefixes:
            return
        with self.library.session() as session:
            for prefix in prefixes:
                rows = session.scalars(
                    select(Photo.path).where(Photo.path.startswith(prefix.rstrip(os.sep) + os.sep, autoescape=True))
                ).all()
                files.extend(p for p in rows if not os.path.lexists(p))
            n = self.library.mark_missing(session, files)
        self.queue.forget(files)
        if n:
            self.stats.missing += n
            log.info("%d photos deleted: marked missing (tags kept)", n,
                     extra={"event": "missing", "count": n, "path": files[0] if len(files) == 1 else None})

    # ---- roots --------------------------------------------------------------------------------
    def _check_roots(self) -> None:
        for root in self.roots:
            present = self._root_present(root)
            if root.paused and present:
                self._resume(root)
            elif not root.paused and not present:
                self._pause(root)

    def _pause(self, root: RootState) -> None:
        root.paused = True
        root.device = None  # when it comes back it may be on another device number
        self._unschedule(root)
        prefix = str(root.path).rstrip(os.sep) + os.sep
        for p in [p for p in self._pending if p.startswith(prefix)]:
            del self._pending[p]
        for p in [p for p in self._deletes if p.startswith(prefix)]:
            del self._deletes[p]
        log.warning("root %s went away (unmounted or removed): paused; its photos are not marked missing",
                    root.path, extra={"event": "root_paused", "root": str(root.path)})
        self._publish_state()

    def _resume(self, root: RootState) -> None:
        root.paused = False
        root.device = root.path.stat().st_dev
        self._unschedule(root)
        root.mode, root.why_polling = "inotify", None
        self._schedule(root)
        log.warning("root %s is back: resumed, catching up", root.path,
                    extra={"event": "root_resumed", "root": str(root.path)})
        self._paused_claims.clear()
        self.reconcile(root)
        self._publish_state()

    # ---- reconcile --------------------------------------------------------------------------
    def reconcile(self, root: RootState) -> int:
        """Compare ``root`` on disk with the library: enqueue new/changed files (recent ones are tracked
        until stable first), mark vanished photos missing. Returns the number of files enqueued."""
        if not self._root_present(root):
            self._pause(root) if not root.paused else None
            return 0
        prefix = str(root.path).rstrip(os.sep) + os.sep
        with self.library.session() as session:
            known = {
                r.path: r for r in session.execute(
                    select(Photo.path, Photo.size, Photo.mtime, Photo.status, Photo.tagged_run_id)
                    .where(Photo.path.startswith(prefix, autoescape=True))
                )
            }
        seen: set[str] = set()
        todo: list[str] = []
        now = time.time()
        for found in iter_photo_files(root.path, self.extensions, self.follow_symlinks):
            path = str(found.path)
            seen.add(path)
            if not self._wanted(path, root):
                continue
            row = known.get(path)
            if row is not None and row.size == found.size and row.mtime == found.mtime and (
                row.status == PhotoStatus.error.value
                or (row.status == PhotoStatus.ok.value and row.tagged_run_id is not None)
            ):
                continue
            if path in self._pending:
                continue
            if now - found.mtime < self.stable_seconds:
                self._track(path, PRIORITY_CATCH_UP)
            else:
                todo.append(path)
        if todo:
            self.queue.enqueue(todo, "new", PRIORITY_CATCH_UP)
            self.stats.enqueued += len(todo)
            self._wakeup.set()
        gone = [p for p, r in known.items() if p not in seen and r.status != PhotoStatus.missing.value
                and not os.path.lexists(p)]
        missing = 0
        if gone and self._root_present(root):
            with self.library.session() as session:
                missing = self.library.mark_missing(session, gone)
            self.queue.forget(gone)
        log.info("reconciled %s: %d to tag, %d missing", root.path, len(todo), missing,
                 extra={"event": "reconciled", "root": str(root.path), "count": len(todo), "missing": missing})
        return len(todo)

    # ---- the consumer -------------------------------------------------------------------------
    def _finished(self, paths: Iterable[str]) -> None:
        removed = False
        with self._in_flight_lock:
            for path in paths:
                removed = self._in_flight.pop(path, None) is not None or removed
        if removed:
            self._wakeup.set()  # a row enqueued again while this one was in flight may wait

    def _jobs(self) -> Iterator[Job]:
        """Jobs claimed from the queue, classified (unchanged/moved need no model), forever.

        A path is never in flight twice: a row enqueued again while its first job is in the pipeline
        waits until that job is committed, and is then classified against what was stored."""
        in_flight = self._in_flight
        with self._in_flight_lock:
            in_flight.clear()
        report = Report()
        while not self._stopping() and self._next_tagger is None:
            with self._in_flight_lock:
                flying = list(in_flight)
            if flying:  # jobs whose rows are gone (done, or moved away) are not in flight any more
                self._finished(set(flying) - self.queue.queued_paths(flying))
            with self._in_flight_lock:
                skip = self._paused_claims | set(in_flight)
            items = self.queue.claim(self.pipeline.batch_size, skip=skip, model=self._model_key())
            if not items and self._catching_up and not flying and not self._pending and self.ready.is_set():
                self._say_caught_up()
            if not items:
                for _ in range(int(IDLE_CLAIM_SECONDS)):
                    if self._wakeup.wait(1.0) or self._stopping() or self._next_tagger is not None:
                        break
                self._wakeup.clear()
                continue
            waiting = list(items)  # claimed, not yet settled or handed over
            try:
                while waiting:
                    if self._stopping() or self._next_tagger is not None:  # a new model: end this run
                        return
                    item = waiting.pop(0)
                    job = self._prepare(item, report)
                    if job is None:
                        continue
                    with self._in_flight_lock:
                        in_flight[str(item.path)] = item.enqueued_at
                    if item.isolated:
                        self._suspect_in_flight = item
                    yield job
                    if item.isolated:  # a suspect: alone in its batch, and wait for its outcome
                        while not self._stopping() and self.queue.still_queued({str(item.path): item.enqueued_at}):
                            self.stop_event.wait(0.2)
                        if not self._stopping():  # settled; else run() looks at what stopped the batch
                            self._suspect_in_flight = None
            finally:  # stopping, or closed by run() (the pipeline stopped pulling): give the rest back
                if waiting:
                    self._unclaim(waiting)

    def _unclaim_paths(self, paths: list[str]) -> None:
        self.queue.release(paths)

    def _unclaim(self, items: list[QueuedItem]) -> None:
        self.queue.release(items)

    def _model_key(self) -> str:
        """What a photo set aside now fails with: this phototag, the model and its weights."""
        return model_key(__version__, self.tagger.model_id, self._weights_sha256(self.tagger))

    def _fail_alone(self, item: QueuedItem, error: str) -> None:
        """``item`` failed while alone in flight: evidence against it; set aside after enough of it."""
        root = self._root_of(str(item.path))
        set_aside = self.queue.fail_alone(item, error, root.path if root else None, self._model_key())
        self.stats.failed += set_aside
        log.log(logging.ERROR if set_aside else logging.WARNING,
                "%s %s: %s", "set aside" if set_aside else "failed alone:", item.path, error,
                extra={"event": "set_aside" if set_aside else "failed_alone", "path": str(item.path),
                       "error": error})

    def _probe(self, item: QueuedItem) -> bool:
        """A suspect (claimed unfinished ``ISOLATE_AFTER`` times: crashes, kills) is decoded alone in
        a child process first. True when it may go on to the model in this process."""
        log.info("%s was in flight %d times when the work stopped unfinished: decoding it alone in a "
                 "probe process first", item.path, item.attempts, extra={"event": "probe", "path": str(item.path)})
        crash = probe_in_child(item.path, self.pipeline.max_pixels, self.probe_timeout)
        if crash is None:
            return True
        self._fail_alone(item, crash)
        return False

    def _prepare(self, item: QueuedItem, report: Report) -> Job | None:
        """Turn a claimed row into a Job, or settle it here (gone, unchanged, moved, poison)."""
        path = str(item.path)
        root = self._root_of(path)
        if item.reason == "retag" and root is None:
            return self._prepare_retag_outside(item)
        if root is None:
            self.queue.forget([path])  # no longer under a watched root
            return None
        if root.paused:
            self._unclaim([item])
            self._paused_claims.add(path)
            return None
        if item.isolated and os.path.isfile(path) and not self._probe(item):
            return None
        try:
            st = os.stat(path) if self.follow_symlinks else os.lstat(path)
            is_file = os.path.isfile(path) and not (os.path.islink(path) and not self.follow_symlinks)
        except OSError:
            st, is_file = None, False
        if st is None or not is_file or not self._wanted(path, root):
            self._done(item)  # vanished (its delete event marks it missing) or not a photo
            return None
        if item.reason == "retag":  # unchanged on purpose: the model (a new default) must see it again
            return Job(item.path, root.path, "retag", queued_at=item.enqueued_at)
        if item.set_aside_for is not None:  # set aside by another phototag or model: try it again
            self.queue.retry_set_aside(item)
            return Job(item.path, root.path, "changed", queued_at=item.enqueued_at)
        found = FoundFile(item.path, root.path, st.st_size, st.st_mtime)
        before = (report.failed, report.moved, report.unchanged)
        jobs = list(self.pipeline._classify([found], report))  # the scan's rules: unchanged / moved / hash
        if jobs:
            job = jobs[0]
            job.queued_at = item.enqueued_at
            return job
        if (report.failed, report.moved, report.unchanged) == before:
            # _classify settled nothing: it saw the stop (SIGTERM) before looking at the file. The row is
            # not done; deleting it here would lose the photo. It stays queued, uncharged.
            self._unclaim([item])
            return None
        if report.failed > before[0]:
            self.stats.failed += 1
            log.warning("cannot read %s: %s", path, report.errors[-1][1],
                        extra={"event": "error", "path": path, "error": report.errors[-1][1]})
        elif report.moved > before[1]:
            self.stats.moved += 1
            log.info("%s: same content as a vanished photo: moved (tags kept)", path,
                     extra={"event": "moved", "path": path})
        self._done(item)
        return None

    def _prepare_retag_outside(self, item: QueuedItem) -> Job | None:
        """A background re-tag of a library photo outside the watched roots (``phototag scan`` put it
        there): re-tag it too. If its file cannot be reached (another drive, unmounted), the row stays
        queued but is not claimed again by this process: dropping it would only have it queued again
        at the next check."""
        path = str(item.path)
        with self.library.session() as session:
            photo_root = session.scalar(select(Photo.root).where(Photo.path == path))
        root = Path(photo_root) if photo_root else None
        if os.path.isfile(path):
            if item.isolated and not self._probe(item):
                return None
            return Job(item.path, root, "retag", queued_at=item.enqueued_at)
        self._unclaim([item])
        self._paused_claims.add(path)
        return None

    def _done(self, item: QueuedItem) -> None:
        self.queue.done(item)

    def _progress(self, event: str, n: int) -> None:
        """After each batch (and each unchanged file): log the batch's unreadable files."""
        if self.report.errors:
            self._finished(p for p, _ in self.report.errors)
            for path, error in self.report.errors:
                self.stats.failed += 1
                log.warning("cannot tag %s: %s", path, error, extra={"event": "error", "path": path, "error": error})
            self.report.errors.clear()

    def _committed(self, photo_ids: list[int]) -> None:
        with self.library.session() as session:
            rows = session.execute(select(Photo.path, Photo.tagged_at).where(Photo.id.in_(photo_ids))).all()
        self._finished(r.path for r in rows)
        self.stats.tagged += len(rows)
        if rows:
            self.stats.last_tagged = rows[-1].path
            self.stats.last_tagged_at = rows[-1].tagged_at.isoformat() if rows[-1].tagged_at else None
        log.info("tagged %d photos", len(rows), extra={"event": "tagged", "count": len(rows),
                                                        "path": rows[-1].path if rows else None})
        if self._user_on_commit is not None:
            self._user_on_commit(photo_ids)

    def _publish_state(self, stopped: bool = False) -> None:
        if self.on_state is not None:
            try:
                self.on_state({**self.state(), "stopped": stopped})
            except Exception:  # pragma: no cover - status is informative only
                log.debug("state callback failed", exc_info=True)


def dumps_state(state: dict) -> str:
    return json.dumps(state, ensure_ascii=False, indent=2, default=str)
