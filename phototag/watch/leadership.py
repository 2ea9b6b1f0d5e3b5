"""Several watchers on one shared library (PostgreSQL, ``database_url``): who does what must be done once.

Tagging needs no leader: every watcher claims work from the one queue, and a claim is exactly-once
across processes and machines (:mod:`phototag.ingest.queue`); the claims of a watcher that died are
free again. What must not run in every watcher is the walk of a whole root (the catch-up and the
periodic reconcile pass: a big NAS folder walked by every machine) and the library-wide background
re-tag scheduling. For each of them the watchers elect a **leader** with a PostgreSQL session-level
advisory lock (``pg_try_advisory_lock``), taken on a connection of its own that the leader keeps
open while it runs. When the leader stops, dies (``kill -9``, a crash) or loses the server, its
connection ends and the server drops the lock; another watcher takes it at its next root check
(every two seconds) and starts with a catch-up pass of that root, since the old leader may have
been waiting for files to become stable. A watcher whose root goes away (an unmounted drive) gives
up that root's lead, so a machine that still sees the folder takes it. A machine that vanishes
without closing its connection (a power cut, a lost network) keeps its leads until the server
notices: the lead connection asks the server for TCP keepalives (:data:`KEEPALIVE`), about a minute.

On SQLite there is one watcher per library (the home's lock, :mod:`phototag.watch.lock`): it leads
everything, and nothing here touches the database.
"""

from __future__ import annotations

import hashlib
import logging
import os

from sqlalchemy import text

log = logging.getLogger("phototag.watch")

#: the lead of background re-tag scheduling (one per library)
RETAG = "retag"
#: the server probes the lead connection after 30 s of silence, every 10 s, and drops it (and its
#: locks) after 3 unanswered probes (no effect on a Unix socket)
KEEPALIVE = {"tcp_keepalives_idle": 30, "tcp_keepalives_interval": 10, "tcp_keepalives_count": 3}


def lock_key(name: str) -> int:
    """The advisory lock's 64-bit key for ``name`` (a root's path, or :data:`RETAG`)."""
    digest = hashlib.sha256(b"phototag-watch\0" + os.fsencode(name)).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class Leadership:
    """The leads this watcher holds. Used from the watcher's event thread only."""

    def __init__(self, library):
        #: a library other processes on other machines share: leads are elected
        self.shared = library.db.dialect != "sqlite"
        self._engine = library.db.engine
        self._conn = None  # the connection whose session holds our advisory locks
        self._held: set[str] = set()

    def leads(self, name: str) -> bool:
        """Whether this watcher leads ``name`` (taking the lead when nobody holds it)."""
        if not self.shared or name in self._held:
            return True
        try:
            if self._conn is None:
                self._conn = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
                for parameter, value in KEEPALIVE.items():
                    self._conn.execute(text(f"SET {parameter} = {int(value)}"))
            got = bool(self._conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": lock_key(name)}).scalar())
        except Exception as exc:  # the server is unreachable: not the leader now; the next check tries again
            log.warning("cannot ask the database who leads %s: %s: %s", name, type(exc).__name__, exc,
                        extra={"event": "lead_failed", "error": str(exc)})
            self._drop_connection()
            return False
        if got:
            self._held.add(name)
        return got

    def held(self) -> set[str]:
        return set(self._held)

    def check(self) -> None:
        """Are our leads still ours? A connection that broke took its locks with it (the server may
        already have given them to another watcher): forget them; :meth:`leads` asks again."""
        if not self._held:
            return
        try:
            self._conn.execute(text("SELECT 1"))
        except Exception as exc:
            log.warning("lost the connection holding this watcher's leads (%s): %s: %s",
                        ", ".join(sorted(self._held)), type(exc).__name__, exc,
                        extra={"event": "lead_lost", "error": str(exc)})
            self._drop_connection()

    def resign(self, name: str) -> None:
        """Give up the lead of ``name`` (its root went away here): another watcher may take it."""
        if name not in self._held or not self.shared:
            return
        self._held.discard(name)
        try:
            self._conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": lock_key(name)})
        except Exception:
            self._drop_connection()

    def close(self) -> None:
        """Stopping: every lead is given up (closing the connection releases its locks)."""
        self._drop_connection()

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        self._held.clear()
        if conn is not None:
            try:
                conn.invalidate()  # not back to the pool: its session's locks must end with it
            except Exception:
                pass
            try:
                conn.close()
            except Exception:
                pass
