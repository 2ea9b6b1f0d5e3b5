"""One watcher per library home: ``<home>/watch.lock``.

The lock is an exclusive ``flock`` held for as long as a watcher runs; it holds the watcher's pid.
A library on a database server (``database_url``) is shared by design: several watchers, on several
machines or in one home, work from its one queue (:mod:`phototag.watch.leadership`), so their lock
is a *shared* ``flock`` (``shared=True``): it lets other such watchers in, still keeps out a watcher
of the home's SQLite library (and is kept out by one), and tells ``phototag status`` that one runs
(with no pid: there may be several).
The kernel releases it when the process dies, so a ``kill -9`` never leaves a stale lock, and
``phototag status`` tests the lock rather than trusting the pid. ``fcntl`` is imported by the
functions that lock: Linux and macOS have it; on Windows no watcher can start (a one-line error)
and ``phototag status`` says none runs.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from phototag import atomic
from phototag.watch.errors import WatchError

LOCK_NAME = "watch.lock"
LOCK_TRIES = 20  # about a second


class WatchLock:
    """An exclusive ``flock`` on ``<home>/watch.lock``: released by the kernel when the process dies,
    so a kill -9 never leaves a stale lock."""

    def __init__(self, home: Path, shared: bool = False):
        self.path = Path(home) / LOCK_NAME
        self.shared = shared
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            import fcntl
        except ImportError:
            raise WatchError("phototag watch cannot run on this system: its one-watcher lock needs flock "
                             "(Linux, macOS)") from None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        mode = fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX
        for attempt in range(LOCK_TRIES):
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
                break
            except OSError:
                # `phototag status` tests the lock for an instant: try again before calling it taken
                if attempt + 1 < LOCK_TRIES:
                    time.sleep(0.05)
        else:
            os.close(fd)
            pid = read_lock_pid(self.path)
            if self.shared:
                raise WatchError(
                    f"a phototag watch of this home's own (SQLite) library runs for {self.path.parent}"
                    + (f" (pid {pid})" if pid else "") + "; stop it first, or give this watcher its own --home"
                ) from None
            raise WatchError(
                f"another phototag watch is already running for {self.path.parent}"
                + (f" (pid {pid})" if pid else "") + "; stop it first (systemctl --user stop phototag, or kill it)"
            ) from None
        os.ftruncate(fd, 0)  # shared: several watchers, no one pid
        if not self.shared:
            os.write(fd, f"{os.getpid()}\n".encode())
        os.fsync(fd)
        self._fd = fd
        atomic.remove_stale_temp_files(self.path.parent)  # a watch.json being written when a watcher was killed

    def release(self) -> None:
        if self._fd is not None:
            import fcntl

            try:
                os.ftruncate(self._fd, 0)
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            finally:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> "WatchLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def read_lock_pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None


def running_watcher(home: Path) -> int | None:
    """The pid of the watcher running for ``home``, or None (the lock is tested, not just the pid)."""
    path = Path(home) / LOCK_NAME
    if not path.exists():
        return None
    try:
        import fcntl
    except ImportError:  # no flock (Windows): no watcher can have started
        return None

    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:  # exclusive: held shared (watchers of a server database) or exclusive, a watcher runs
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return read_lock_pid(path) or -1  # held: a watcher runs (-1: which one is not known)
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
