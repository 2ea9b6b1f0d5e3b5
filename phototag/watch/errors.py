"""The errors of ``phototag watch`` and ``phototag service``."""

from __future__ import annotations

from phototag.errors import PhototagError

#: catch-up tries, housekeeping passes failing in a row, batches that cannot be stored: then the
#: watcher stops with :class:`WatchFatal`
FATAL_AFTER = 5


class WatchError(PhototagError):
    """``phototag watch`` cannot start (no roots, another watcher running, …); the message says why
    and what to do."""


class WatchFatal(PhototagError):
    """The watcher cannot go on (its database failed or vanished, its event thread died): it stopped,
    and the process must exit non-zero so that its supervisor restarts it."""

    exit_code = 1
