"""Re-tagging: run a (new) model version over photos already in the library.

* :mod:`~phototag.retag.service` — the ``phototag retag`` command: a crash-safe session (snapshot,
  enqueue, drain), ``--dry-run`` on a copy of the database, the report of what changed;
* :mod:`~phototag.retag.policy` — background re-tagging: which photos are due (``retag.every``,
  ``retag.window``, a new default model), used by the watcher.

The work queue is :mod:`phototag.ingest.queue`'s: neither module writes its table itself.
"""

from __future__ import annotations

from phototag.library import LibraryError


class RetagError(LibraryError):
    """A re-tag cannot start or continue (another session is unfinished, bad setting, …)."""
