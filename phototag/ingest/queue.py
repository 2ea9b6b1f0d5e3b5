"""The persistent work queue (table ``work_queue``): photos waiting for the model.

Exactly-once, crash or not, rests on four rules:

* a path is **enqueued** (committed) before anything else happens to it, so a kill never loses it;
* a process works on a row only after it **claimed** it: the row names its ``owner`` (host, pid and
  the pid's start time). Two processes never hold one row (``scan`` + ``scan``, ``scan`` + ``watch``,
  the watcher's threads, watchers on several machines sharing a PostgreSQL library): a claim is a
  compare-and-set on ``owner``; on PostgreSQL the candidate rows are read ``FOR UPDATE SKIP LOCKED``
  as well, so concurrent claimers pass each other's rows by instead of queueing on them. The claims
  of a process that died are free again at once on the same host (its pid is gone, or is another
  process now), and after :data:`LEASE_SECONDS` without a ``heartbeat_at`` from another host (host
  names must differ between the machines that share a library);
* the pipeline settles a photo's queue row **in the transaction that stores its tags**
  (:func:`settle`), so a kill either keeps both or neither;
* a claimed row is classified again before the model sees it (unchanged → dropped), so an item that
  is processed twice for any reason costs a hash, never a second model run.

Each row carries ``enqueued_at``, bumped whenever the path is enqueued again. A claim remembers it
(:attr:`phototag.pipeline.Job.queued_at`) and the row is deleted only if it was not enqueued again
meanwhile, so a file that changes while its batch is in flight is tagged once more rather than
forgotten (the row is only released then).

**A crash is no evidence against a photo.** ``attempts`` counts claims that did not finish, for any
reason: a ``kill -9``, a power cut, the model raising on a batch. It never gives a photo up. A row
with :data:`ISOLATE_AFTER` unfinished claims is a *suspect*: it is claimed alone, and the watcher
first decodes it in a separate **probe process** (:func:`phototag.pipeline.probe_decode`). Only
evidence from a photo that was alone counts in ``failures``: the probe process died or hung on it, or
the model raised on a batch holding nothing else. After :data:`MAX_FAILURES` such failures the photo
is **set aside**: recorded as an error photo with the reason, its row kept with ``set_aside_for`` =
the phototag version, model id and weights hash it failed with (:func:`model_key`). A set-aside row
is not claimed again until one of those changes (a new phototag, another model or new weights), or
its file changes (it is enqueued again).
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Collection, Iterable

from sqlalchemy import and_, case, delete, func, or_, select, update
from sqlalchemy.orm import Session

from phototag.db import sql
from phototag.db.models import WorkItem, utcnow
from phototag.library import Library

MAX_FAILURES = 3  # failures while alone in flight before a photo is set aside
ISOLATE_AFTER = 2  # unfinished claims after which a row is a suspect: claimed alone, probed first
LEASE_SECONDS = 300.0  # a claim by another host is free once its heartbeat is this old
HEARTBEAT_SECONDS = 30.0

# The one definition of queue priorities (higher first).
PRIORITY_NEW = 10  # a photo that just appeared: the user is waiting for it
PRIORITY_CATCH_UP = 5  # found by a reconcile pass
PRIORITY_RETAG = 0  # re-tagging (background, and `phototag retag`)

#: the reason of a re-tag row: the model must see the photo again even though its file is unchanged
REASON_RETAG = "retag"


# ---- who owns a claim ------------------------------------------------------------------------------
def _start_time(pid: int) -> str | None:
    """The start time of process ``pid`` (clock ticks since boot), or None when there is no such process.
    With the pid it names one process for good: a pid reused after a kill is another start time."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        return stat[stat.rindex(b")") + 2:].split()[19].decode()
    except FileNotFoundError:
        return None
    except (OSError, ValueError, IndexError):  # no /proc (not Linux): is the pid there at all?
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return "?"


_token: tuple[int, str] | None = None


def process_owner() -> str:
    """This process as a claim owner: ``host:pid:start-time``."""
    global _token
    pid = os.getpid()
    if _token is None or _token[0] != pid:  # computed again in a forked child
        _token = (pid, f"{socket.gethostname()}:{pid}:{_start_time(pid)}")
    return _token[1]


def owner_alive(owner: str | None, heartbeat_at: dt.datetime | None, now: dt.datetime | None = None) -> bool:
    """Is the process that claimed a row still there? On this host its pid is checked (a kill -9 frees
    its claims at once); a claim from another host holds while its heartbeat is fresh."""
    if not owner:
        return False
    try:
        host, pid_text, start = owner.rsplit(":", 2)
        pid = int(pid_text)
    except ValueError:
        return False
    if host == socket.gethostname():
        current = _start_time(pid)
        return current is not None and (current == start or "?" in (current, start))
    now = now or utcnow()
    return heartbeat_at is not None and (now - heartbeat_at).total_seconds() < LEASE_SECONDS


def model_key(version: str, model_id: str, weights_sha256: str) -> str:
    """What a set-aside photo failed with: phototag's version, the model id and its weights hash."""
    return f"{version}|{model_id}|{weights_sha256}"


def settle(session: Session, path: Path | str, queued_at: dt.datetime | None) -> None:
    """In the transaction that stored a photo's outcome (tags, or an error): its queue row is done.

    With ``queued_at`` (the claim's ``enqueued_at``) the row is deleted only if it was not enqueued
    again meanwhile; otherwise this process's claim on it is released, so the newer version of the
    file is looked at. Without it (a ``scan`` that did not claim), any row for the path goes."""
    path = str(path)
    if queued_at is None:
        session.execute(delete(WorkItem).where(WorkItem.path == path))
        return
    session.execute(delete(WorkItem).where(WorkItem.path == path, WorkItem.enqueued_at <= queued_at))
    # the claim finished: it no longer counts as one that did not (attempts), or the newer version
    # of the file would later look like a suspect and go through a probe for nothing
    session.execute(update(WorkItem).where(WorkItem.path == path, WorkItem.owner == process_owner())
                    .values(owner=None, heartbeat_at=None,
                            attempts=case((WorkItem.attempts > 0, WorkItem.attempts - 1), else_=0)))


@dataclass(frozen=True)
class QueuedItem:
    id: int
    path: Path
    reason: str
    priority: int
    attempts: int  # earlier claims that did not finish (the process died, or the model raised)
    last_error: str | None
    enqueued_at: dt.datetime
    failures: int = 0  # earlier failures while alone in flight (evidence against the photo)
    set_aside_for: str | None = None  # set aside for another phototag/model: this claim retries it

    @property
    def isolated(self) -> bool:
        return self.attempts >= ISOLATE_AFTER

    @classmethod
    def of(cls, row: WorkItem) -> "QueuedItem":
        return cls(row.id, Path(row.path), row.reason, row.priority, row.attempts, row.last_error,
                   row.enqueued_at, row.failures or 0, row.set_aside_for)


class WorkQueue:
    """Enqueue, claim, release and set aside queue rows. Thread-safe (every call is its own
    transaction; every read-then-write is a compare-and-set or an upsert, so concurrent writers in
    other threads or processes never make one fail)."""

    def __init__(self, library: Library, max_failures: int = MAX_FAILURES):
        self.library = library
        self.max_failures = max_failures
        self._beat_lock = threading.Lock()
        self._beating: threading.Thread | None = None
        self._beat_stop = threading.Event()

    @property
    def owner(self) -> str:
        return process_owner()

    # ---- producers ------------------------------------------------------------------------
    def enqueue(self, paths: Iterable[Path | str], reason: str = "new", priority: int = PRIORITY_NEW,
                model_name: str | None = None) -> int:
        """Add ``paths`` (one transaction). A path already queued keeps its place in line, takes the
        higher priority, and gets a new ``enqueued_at`` so an in-flight claim of it is not the last word;
        a set-aside row is given a new chance (the file changed). One upsert per path: a row deleted or
        changed by another thread or process meanwhile cannot make it fail. Returns the number of paths."""
        paths = list(dict.fromkeys(str(p) for p in paths))
        if not paths:
            return 0
        with self.library.session() as session:
            for start in range(0, len(paths), 500):
                chunk = paths[start:start + 500]
                before = dict(session.execute(
                    select(WorkItem.path, WorkItem.enqueued_at).where(WorkItem.path.in_(chunk))).all())
                now = utcnow()
                rows = [{
                    "path": path, "reason": reason, "model_name": model_name, "priority": priority,
                    "attempts": 0, "failures": 0,
                    # strictly later than before, even if the clock stepped back
                    "enqueued_at": max(now, before[path] + dt.timedelta(microseconds=1)) if path in before else now,
                } for path in chunk]
                stmt = sql.insert(session, WorkItem)
                new = stmt.excluded
                stmt = stmt.on_conflict_do_update(index_elements=[WorkItem.path], set_={
                    "priority": sql.greatest(session, WorkItem.priority, new.priority),
                    "reason": WorkItem.reason if reason == REASON_RETAG else new.reason,
                    "enqueued_at": sql.greatest(session, WorkItem.enqueued_at, new.enqueued_at),
                    **({} if reason == REASON_RETAG else {"set_aside_for": None, "failures": 0}),
                })
                session.execute(stmt, rows)
        return len(paths)

    def enqueue_retag(self, paths: Iterable[Path | str], model_name: str | None = None) -> int:
        """Queue ``paths`` for re-tagging (reason :data:`REASON_RETAG`, the lowest priority, so new
        photos are tagged first; ``model_name`` None = whatever the default model is when the row is
        processed) in one transaction. A path already queued keeps its row and its reason: a new or
        changed file is tagged anyway. Returns the number of paths."""
        return self.enqueue(paths, REASON_RETAG, PRIORITY_RETAG, model_name)

    def forget(self, paths: Iterable[Path | str], reason: str | None = None) -> int:
        """Drop queue rows (the file was deleted, or turned out to be no photo); with ``reason``, only
        rows queued for it (``phototag retag --abandon`` keeps rows of changed files)."""
        paths = [str(p) for p in paths]
        if not paths:
            return 0
        dropped = 0
        with self.library.session() as session:
            for start in range(0, len(paths), 500):
                stmt = delete(WorkItem).where(WorkItem.path.in_(paths[start:start + 500]))
                if reason is not None:
                    stmt = stmt.where(WorkItem.reason == reason)
                dropped += session.execute(stmt).rowcount or 0
        return dropped

    def rename(self, old: Path | str, new: Path | str) -> bool:
        """A queued file was moved before it was tagged: queue it under its new path."""
        with self.library.session() as session:
            row = session.scalar(select(WorkItem).where(WorkItem.path == str(old)))
            if row is None:
                return False
            reason, priority, model_name = row.reason, row.priority, row.model_name
            session.execute(delete(WorkItem).where(WorkItem.id == row.id))
        self.enqueue([new], reason, priority, model_name)
        return True

    def move_tree(self, session: Session, src_prefix: str, dest_prefix: str) -> int:
        """A folder was moved: the rows of the files under ``src_prefix`` follow to ``dest_prefix``, in
        ``session`` (the transaction that moves the photos), enqueued again (a claim in flight under the
        old path is not the last word). Returns the number of rows moved."""
        rows = session.scalars(select(WorkItem).where(WorkItem.path.startswith(src_prefix, autoescape=True))).all()
        for row in rows:
            row.path = dest_prefix + row.path[len(src_prefix):]
            row.enqueued_at = utcnow()
        return len(rows)

    # ---- consumers --------------------------------------------------------------------------
    def _take(self, session: Session, row: WorkItem, now: dt.datetime) -> bool:
        """Compare-and-set: this process owns ``row`` if nobody took it since it was read."""
        seen = WorkItem.owner.is_(None) if row.owner is None else WorkItem.owner == row.owner
        result = session.execute(
            update(WorkItem).where(WorkItem.id == row.id, seen)
            .values(owner=self.owner, heartbeat_at=now, attempts=WorkItem.attempts + 1)
        )
        return result.rowcount == 1

    def _free(self, row: WorkItem, now: dt.datetime, alive: dict[str, bool]) -> bool:
        if row.owner is None:
            return True
        if row.owner == self.owner:
            return False
        if row.owner not in alive:
            alive[row.owner] = owner_alive(row.owner, row.heartbeat_at, now)
        return not alive[row.owner]

    def claim(self, limit: int, skip: Collection[str] = (), model: str | None = None,
              retag_model: str | None = None) -> list[QueuedItem]:
        """Up to ``limit`` free rows in priority, then FIFO, order; each is owned by this process and
        ``attempts`` is incremented (committed) before it is returned.

        ``skip``: paths with a claim still in flight in this process. Suspects (rows with
        :data:`ISOLATE_AFTER` unfinished claims) come first and alone (a one-item list). ``model``
        (:func:`model_key`): rows set aside for it are not claimed; rows set aside for another model
        or phototag are, to be tried again. Re-tag rows with a ``model_name`` (``phototag retag
        --model X``) are never claimed: that command drains them itself, with ``retag_model`` = X
        (then only those rows are claimed)."""
        skip = set(skip)
        # a re-tag row naming a model belongs to a running `phototag retag --model X`: it drains its own
        # rows (tagging them with the daemon's model instead would undo what the user asked for)
        if retag_model is not None:
            ours = and_(WorkItem.reason == REASON_RETAG, WorkItem.model_name == retag_model)
        else:
            ours = or_(WorkItem.reason != REASON_RETAG, WorkItem.model_name.is_(None))
        not_set_aside = or_(WorkItem.set_aside_for.is_(None), WorkItem.set_aside_for != (model or ""))
        mine = or_(WorkItem.owner.is_(None), WorkItem.owner != self.owner)
        now = utcnow()
        alive: dict[str, bool] = {}
        with self.library.session() as session:
            order = (WorkItem.priority.desc(), WorkItem.id)
            for suspects, want in ((True, 1), (False, limit)):
                cond = WorkItem.attempts >= ISOLATE_AFTER if suspects else WorkItem.attempts >= 0
                offset, taken = 0, []
                while len(taken) < want:
                    candidates = (select(WorkItem).where(ours, not_set_aside, mine, cond).order_by(*order)
                                  .offset(offset).limit(want + len(skip) + 16))
                    if session.get_bind().dialect.name == "postgresql":
                        # rows another claimer has in hand right now are passed by, not waited for
                        # (SQLite has one writer at a time: the compare-and-set alone decides there)
                        candidates = candidates.with_for_update(skip_locked=True)
                    page = session.scalars(candidates).all()
                    if not page:
                        break
                    offset += len(page)
                    for row in page:
                        if len(taken) >= want:
                            break
                        if row.path in skip or not self._free(row, now, alive):
                            continue
                        if suspects is False and row.attempts >= ISOLATE_AFTER and taken:
                            continue  # a suspect never shares a batch
                        item = QueuedItem.of(row)
                        if self._take(session, row, now):
                            taken.append(item)
                            if item.isolated:
                                break
                    if taken and taken[-1].isolated:
                        break
                if taken:
                    self._start_heartbeat()
                    return taken
        return []

    def claim_path(self, path: Path | str, reason: str = "new") -> QueuedItem | None:
        """Claim one file this process is about to tag outside the queue's order (``phototag scan``):
        its row is created, or taken over when free. None when another live process holds it (it tags
        the file) or this process already does. The returned item's ``enqueued_at`` goes into the
        job, so the row is settled with the photo's tags (:func:`settle`)."""
        path = str(path)
        now = utcnow()
        with self.library.session() as session:
            inserted = session.execute(
                sql.insert(session, WorkItem).values(
                    path=path, reason=reason, model_name=None, priority=PRIORITY_NEW, attempts=1, failures=0,
                    enqueued_at=now, owner=self.owner, heartbeat_at=now,
                ).on_conflict_do_nothing(index_elements=[WorkItem.path]).returning(WorkItem.id)
            ).first()
            # RETURNING, not rowcount: an ORM insert's rowcount is -1 on PostgreSQL
            if inserted is not None:
                self._start_heartbeat()
                return QueuedItem(0, Path(path), reason, PRIORITY_NEW, 0, None, now)
            row = session.scalar(select(WorkItem).where(WorkItem.path == path))
            if row is None or not self._free(row, now, {}):
                return None  # done meanwhile (the caller checks again), or held by a live process
            item = QueuedItem.of(row)
            if not self._take(session, row, now):
                return None
        self._start_heartbeat()
        return item

    def release(self, items: Iterable[QueuedItem | Path | str], charge: bool = False) -> None:
        """Give claims back unprocessed (stopping, a paused root, another process's photo): the rows
        stay queued for anyone to claim; without ``charge`` the claim is not counted as an attempt."""
        paths = [str(i.path) if isinstance(i, QueuedItem) else str(i) for i in items]
        if not paths:
            return
        values: dict = {"owner": None, "heartbeat_at": None}
        if not charge:
            values["attempts"] = case((WorkItem.attempts > 0, WorkItem.attempts - 1), else_=0)
        with self.library.session() as session:
            for start in range(0, len(paths), 500):
                session.execute(update(WorkItem).where(
                    WorkItem.path.in_(paths[start:start + 500]), WorkItem.owner == self.owner).values(**values))

    def done(self, item: QueuedItem) -> None:
        """Settle a claimed row without model work (unchanged, moved, vanished, not a photo)."""
        with self.library.session() as session:
            settle(session, item.path, item.enqueued_at)

    def _start_heartbeat(self) -> None:
        with self._beat_lock:
            if self._beating is not None and self._beating.is_alive():
                return
            self._beat_stop.clear()
            self._beating = threading.Thread(target=self._beat_loop, name="phototag-queue-heartbeat", daemon=True)
            self._beating.start()

    def _beat_loop(self) -> None:
        """While this process owns rows, refresh their ``heartbeat_at`` (for claimers on other hosts)."""
        while not self._beat_stop.wait(HEARTBEAT_SECONDS):
            try:
                with self.library.session() as session:
                    owned = session.execute(update(WorkItem).where(WorkItem.owner == self.owner)
                                            .values(heartbeat_at=utcnow())).rowcount
            except Exception:  # the database is busy or gone: the next beat (or the owner) will see
                continue
            if not owned:
                return

    def close(self) -> None:
        self._beat_stop.set()

    def queued_paths(self, paths: Collection[str]) -> set[str]:
        """Which of ``paths`` have a queue row (whatever its ``enqueued_at``)."""
        if not paths:
            return set()
        with self.library.session() as session:
            return set(session.scalars(select(WorkItem.path).where(WorkItem.path.in_(list(paths)))).all())

    def still_queued(self, claims: dict[str, dt.datetime]) -> set[str]:
        """Which of these claims are still in the queue unchanged (neither done nor enqueued again)."""
        if not claims:
            return set()
        with self.library.session() as session:
            rows = session.execute(
                select(WorkItem.path, WorkItem.enqueued_at).where(WorkItem.path.in_(list(claims)))
            ).all()
        return {p for p, stamp in rows if claims.get(p) == stamp}

    # ---- failures ---------------------------------------------------------------------------
    def note_failure(self, paths: Iterable[Path | str], error: str) -> None:
        """The model (or something else) failed on a batch with these rows: they stay queued, charged
        the claim (``attempts``), released for the next claim. No evidence against any one photo."""
        paths = [str(p) for p in paths]
        if paths:
            with self.library.session() as session:
                session.execute(update(WorkItem).where(WorkItem.path.in_(paths))
                                .values(last_error=error[:2000]))
            self.release(paths, charge=True)

    def fail_alone(self, item: QueuedItem, error: str, root: Path | None, model: str) -> bool:
        """``item`` failed while it was alone in flight (its probe process crashed or hung, or the
        model raised on it alone): evidence against the photo. After :attr:`max_failures` such failures
        it is set aside for ``model`` (:func:`model_key`) and recorded as an error photo. Returns True
        when it was set aside; else the row is released for another try."""
        with self.library.session() as session:
            row = session.scalar(select(WorkItem).where(WorkItem.path == str(item.path)))
            if row is None:
                return False
            failures = (row.failures or 0) + 1
            values = {"failures": failures, "last_error": error[:2000], "owner": None, "heartbeat_at": None}
            set_aside = failures >= self.max_failures
            if set_aside:
                values["set_aside_for"] = model
                try:
                    st = item.path.stat()
                    size, mtime = st.st_size, st.st_mtime
                except OSError:
                    size = mtime = None
                reason = (f"set aside after {failures} failures while tagged alone: {error} (tried again when "
                          "the file, phototag or the model changes)")
                self.library.record_error(session, item.path, root, reason, size, mtime)
            session.execute(update(WorkItem).where(WorkItem.id == row.id).values(**values))
            return set_aside

    def retry_set_aside(self, item: QueuedItem) -> None:
        """A photo set aside for another phototag version or model is tried again from scratch."""
        with self.library.session() as session:
            session.execute(update(WorkItem).where(WorkItem.id == item.id)
                            .values(set_aside_for=None, failures=0))

    # ---- reading --------------------------------------------------------------------------
    def length(self) -> int:
        with self.library.session() as session:
            return session.scalar(select(func.count()).select_from(WorkItem)) or 0

    def failing(self) -> int:
        """Rows that were claimed and are still queued (retrying)."""
        with self.library.session() as session:
            return session.scalar(select(func.count()).select_from(WorkItem).where(WorkItem.attempts > 0)) or 0

    def set_aside(self) -> int:
        """Rows set aside (for some phototag version and model)."""
        with self.library.session() as session:
            return session.scalar(select(func.count()).select_from(WorkItem)
                                  .where(WorkItem.set_aside_for.is_not(None))) or 0
