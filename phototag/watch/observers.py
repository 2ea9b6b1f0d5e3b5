"""The watchdog observers of a watcher: they only put filesystem events on a queue.

Each root is watched by the platform's native observer (watchdog's ``Observer``: inotify on Linux,
FSEvents on macOS, ReadDirectoryChangesW on Windows) or by polling every ``watch.poll_seconds``:
with ``--polling``, for network filesystems (:mod:`phototag.watch.mounts`), and for a root for which
the kernel refuses more watches (``ENOSPC``/``EMFILE``: inotify's ``max_user_watches``).
"""

from __future__ import annotations

import errno
import logging
import queue as queue_mod
from typing import TYPE_CHECKING

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
from watchdog.observers import Observer
from watchdog.observers.polling import PollingObserver

from phototag.watch.mounts import filesystem_type, is_network_filesystem

if TYPE_CHECKING:
    from phototag.watch.roots import RootState

log = logging.getLogger("phototag.watch")

WATCHED_EVENTS = [
    FileCreatedEvent, FileModifiedEvent, FileClosedEvent, FileMovedEvent, FileDeletedEvent,
    DirCreatedEvent, DirMovedEvent, DirDeletedEvent,
]

#: what a root watched by the platform's observer says it is watched by (``phototag status``)
NATIVE_MODE = {
    "InotifyObserver": "inotify", "FSEventsObserver": "fsevents", "KqueueObserver": "kqueue",
    "WindowsApiObserver": "windows", "PollingObserver": "polling",
}.get(Observer.__name__, Observer.__name__)


class _Handler(FileSystemEventHandler):
    def __init__(self, sink: queue_mod.Queue):
        self.sink = sink

    def on_any_event(self, event: FileSystemEvent) -> None:
        self.sink.put(event)


class Observers:
    """Schedule roots on the native observer or the polling one (each started on first use)."""

    def __init__(self, sink: queue_mod.Queue, *, force_polling: bool, poll_seconds: float):
        self.handler = _Handler(sink)
        self.force_polling = force_polling
        self.poll_seconds = poll_seconds
        self._native = None
        self._polling: PollingObserver | None = None

    def schedule(self, root: RootState) -> None:
        if self.force_polling:
            root.mode, root.why_polling = "polling", "--polling"
        elif is_network_filesystem(root.path):
            root.mode, root.why_polling = "polling", f"network filesystem ({filesystem_type(root.path)})"
        if root.mode != "polling":
            try:
                if self._native is None:
                    self._native = Observer()
                    self._native.start()
                root.watch = self._native.schedule(
                    self.handler, str(root.path), recursive=True, event_filter=WATCHED_EVENTS,
                    follow_symlink=False,
                )
                root.observer = self._native
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
            root.watch = self._polling.schedule(self.handler, str(root.path), recursive=True,
                                                event_filter=WATCHED_EVENTS)
            root.observer = self._polling
        log.info("watching %s (%s%s)", root.path, root.mode, f": {root.why_polling}" if root.why_polling else "",
                 extra={"event": "watching", "root": str(root.path), "mode": root.mode})

    def unschedule(self, root: RootState) -> None:
        if root.watch is not None and root.observer is not None:
            try:
                root.observer.unschedule(root.watch)
            except Exception:  # the watch died with its directory
                pass
        root.watch = root.observer = None

    def stop(self) -> None:
        for obs in (self._native, self._polling):
            if obs is not None:
                try:
                    obs.stop()
                    obs.join(timeout=10)
                except Exception:  # pragma: no cover - shutting down anyway
                    log.debug("observer stop failed", exc_info=True)
