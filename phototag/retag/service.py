"""Re-tagging: run a (new) model version over photos already in the library.

The service of ``phototag retag [QUERY]``; the watcher's background re-tagging is
:mod:`phototag.retag.policy`'s.

How a re-tag survives a crash (``kill -9``, power loss):

1. :func:`start_retag` selects the matching photos, snapshots their current *model* tags into a
   session file (``<home>/retag/session.json``, written to a temp file and renamed) with state
   ``pending``, then enqueues every photo into ``work_queue`` (reason ``retag``, the model's name)
   in **one** transaction (:meth:`WorkQueue.enqueue_retag`), then marks the session ``enqueued``.
2. :func:`drain_retag` claims the session's queued rows through the work queue
   (:meth:`WorkQueue.claim` with ``retag_model``), batch after batch, and feeds them through
   :meth:`Pipeline.process`; each batch's transaction stores the new model tags *and* settles that
   batch's queue rows, so a crash leaves exactly the photos not yet done in the queue (the claims
   of a killed process are free again at once).
3. ``phototag retag --resume`` (or the same ``phototag retag`` command again) finds the session
   file and continues with step 2 (or redoes step 1's enqueue when the crash came before it
   committed). The report compares the snapshot with the final tags, so a resumed re-tag reports
   the same changes as an uninterrupted one.

Only ``model`` tags are replaced (``Library.store_prediction``): manual and imported tags and the
user's removals (``tag_removals``) are never touched, and a removed tag is not given back.

``--dry-run`` runs the very same pipeline on a throw-away copy of the database (SQLite's backup
API) and reports the diff; the library itself is not written.

With ``phototag watch`` running: the watcher never claims the rows of ``phototag retag --model X``,
and the re-tag never tags a photo whose row the watcher queued again (reason ``new``: the file
changed, the watcher tags it). A file that changes while its re-tag is in flight has its row
enqueued again: the re-tag's commit only releases it (:func:`phototag.ingest.queue.settle`), and
the watcher tags the new content.

The work queue is :mod:`phototag.ingest.queue`'s: this module never writes its table itself.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from phototag import atomic
from phototag.config import Settings
from phototag.db.engine import copy_database, open_database
from phototag.db.models import Photo, PhotoStatus, PhotoTag, Tag, TagSource, utcnow
from phototag.ingest.queue import REASON_RETAG, WorkQueue
from phototag.library import Library
from phototag.pipeline import Job, Pipeline
from phototag.query.service import parse_query, search_ids
from phototag.retag import RetagError
from phototag.tagging.registry import get_tagger

log = logging.getLogger(__name__)

SESSION_FILE = "session.json"
LAST_REPORT_FILE = "last-report.json"


# ---- the report ---------------------------------------------------------------------------------


@dataclass
class PhotoChange:
    photo_id: int
    path: str
    added: list[str]
    removed: list[str]


@dataclass
class RetagReport:
    model: str
    query: list[str]
    session_id: str
    dry_run: bool = False
    resumed: bool = False
    photos: int = 0  #: photos selected
    retagged: int = 0  #: photos the model ran on (this process)
    skipped: list[tuple[str, str]] = field(default_factory=list)  #: (path, why)
    failed: list[tuple[str, str]] = field(default_factory=list)
    changed: list[PhotoChange] = field(default_factory=list)
    tags_added: dict[str, int] = field(default_factory=dict)  #: tag → photos that gained it
    tags_removed: dict[str, int] = field(default_factory=dict)  #: tag → photos that lost it
    model_run_ids: list[int] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["skipped"] = [{"path": p, "why": w} for p, w in self.skipped]
        data["failed"] = [{"path": p, "error": e} for p, e in self.failed]
        data["photos_changed"] = len(self.changed)
        data["seconds"] = round(self.seconds, 3)
        return data


def diff_model_tags(
    before: dict[int, dict[str, float]], after: dict[int, dict[str, float]], paths: dict[int, str]
) -> tuple[list[PhotoChange], dict[str, int], dict[str, int]]:
    """Per-photo and per-tag changes between two snapshots of model tags (score changes ignored)."""
    changes: list[PhotoChange] = []
    added_by_tag: Counter[str] = Counter()
    removed_by_tag: Counter[str] = Counter()
    for photo_id in sorted(set(before) | set(after)):
        old = set(before.get(photo_id, {}))
        new = set(after.get(photo_id, {}))
        added, removed = sorted(new - old), sorted(old - new)
        if added or removed:
            changes.append(PhotoChange(photo_id, paths.get(photo_id, f"#{photo_id}"), added, removed))
            added_by_tag.update(added)
            removed_by_tag.update(removed)
    order = lambda c: dict(sorted(c.items(), key=lambda kv: (-kv[1], kv[0])))  # noqa: E731
    return changes, order(added_by_tag), order(removed_by_tag)


def model_tags_snapshot(session: Session, photo_ids: Sequence[int]) -> dict[int, dict[str, float]]:
    """``photo id → {tag: score}`` of the photos' current model tags."""
    snapshot: dict[int, dict[str, float]] = {pid: {} for pid in photo_ids}
    ids = list(photo_ids)
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        rows = session.execute(
            select(PhotoTag.photo_id, Tag.name, PhotoTag.score)
            .join(Tag, Tag.id == PhotoTag.tag_id)
            .where(PhotoTag.photo_id.in_(chunk), PhotoTag.source == TagSource.model.value)
        )
        for photo_id, name, score in rows:
            snapshot[photo_id][name] = round(float(score or 0.0), 6)
    return snapshot


# ---- selecting photos ---------------------------------------------------------------------------


def select_photo_ids(session: Session, query: Sequence[str] | None) -> list[int]:
    """Ids of the photos with status ok that match ``query`` (all of them when it is empty)."""
    if not query:
        return list(session.scalars(select(Photo.id).where(Photo.status == PhotoStatus.ok.value).order_by(Photo.id)))
    ids = set(search_ids(session, parse_query(list(query))))
    ok = select(Photo.id).where(Photo.status == PhotoStatus.ok.value)
    return sorted(ids & set(session.scalars(ok)))


# ---- the session file ---------------------------------------------------------------------------


@dataclass
class RetagSession:
    id: str
    model: str
    query: list[str]
    created_at: str
    state: str  # pending (enqueue not known to be committed) | enqueued
    photo_ids: list[int]
    paths: dict[int, str]
    before: dict[int, dict[str, float]]
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["paths"] = {str(k): v for k, v in self.paths.items()}
        data["before"] = {str(k): v for k, v in self.before.items()}
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "RetagSession":
        return cls(
            id=data["id"], model=data["model"], query=list(data["query"]), created_at=data["created_at"],
            state=data["state"], photo_ids=[int(i) for i in data["photo_ids"]],
            paths={int(k): v for k, v in data["paths"].items()},
            before={int(k): dict(v) for k, v in data["before"].items()},
            skipped=[tuple(x) for x in data.get("skipped", [])],
        )


def retag_dir(settings: Settings) -> Path:
    return settings.home / "retag"


def load_session(settings: Settings) -> RetagSession | None:
    """The unfinished re-tag session of this home, if any."""
    path = retag_dir(settings) / SESSION_FILE
    if not path.exists():
        return None
    try:
        return RetagSession.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, KeyError) as exc:
        raise RetagError(f"{path}: unreadable re-tag session ({exc}); delete it to start over") from exc


def _save_session(settings: Settings, rs: RetagSession) -> None:
    atomic.write_json(retag_dir(settings) / SESSION_FILE, rs.to_json(), indent=None)


def _end_session(settings: Settings) -> None:
    with contextlib.suppress(OSError):
        os.unlink(retag_dir(settings) / SESSION_FILE)


# ---- the command --------------------------------------------------------------------------------


def start_retag(library: Library, query: Sequence[str] | None, model: str | None) -> RetagSession:
    """Snapshot + enqueue (step 1). Raises :class:`RetagError` when another session is unfinished."""
    settings = library.settings
    existing = load_session(settings)
    model_name = model or settings.default_model
    if existing is not None:
        if existing.model == model_name and existing.query == list(query or []):
            return existing  # the same command again: continue it
        raise RetagError(
            f"an unfinished re-tag (model {existing.model}, query {' '.join(existing.query) or '(all)'}) "
            "is in progress: continue it with `phototag retag --resume` or drop it with `phototag retag --abandon`"
        )
    with library.session() as session:
        ids = select_photo_ids(session, query)
        paths = dict(session.execute(select(Photo.id, Photo.path).where(Photo.id.in_(ids))).all()) if ids else {}
        skipped = [(paths[i], "file not found") for i in ids if not os.path.exists(paths[i])]
        ids = [i for i in ids if os.path.exists(paths[i])]
        before = model_tags_snapshot(session, ids)
    rs = RetagSession(
        id=uuid.uuid4().hex[:12], model=model_name, query=list(query or []),
        created_at=utcnow().isoformat(timespec="seconds"), state="pending", photo_ids=ids,
        paths={i: paths[i] for i in ids}, before=before, skipped=skipped,
    )
    _save_session(settings, rs)
    _commit_enqueue(library, rs)
    return rs


def _commit_enqueue(library: Library, rs: RetagSession) -> None:
    # one transaction: every photo, or none
    WorkQueue(library).enqueue_retag(list(rs.paths.values()), rs.model)
    rs.state = "enqueued"
    _save_session(library.settings, rs)


def abandon_retag(library: Library) -> int:
    """Drop the unfinished session and its queued rows; tags already replaced stay. Returns rows dropped."""
    rs = load_session(library.settings)
    if rs is None:
        return 0
    dropped = WorkQueue(library).forget(rs.paths.values(), reason=REASON_RETAG)
    _end_session(library.settings)
    return dropped


class _Claims:
    """This re-tag's rows of the work queue, claimed through it a batch at a time.

    Only rows still queued for this re-tag are claimed: a row the watcher queued again for a changed
    file (reason ``new``) is the watcher's. ``claimed``: the paths claimed; ``jobs_given``: how many
    went to the model."""

    def __init__(self, library: Library, rs: RetagSession, chunk: int):
        self.queue = WorkQueue(library)
        self.rs = rs
        self.chunk = max(1, chunk)
        self.ours = set(rs.paths.values())
        self.others: set[str] = set()  # rows of this model outside the session (a dry run's copy of a real one)
        self.claimed: set[str] = set()
        self.jobs_given = 0

    def next(self) -> list:
        while True:
            items = self.queue.claim(self.chunk, skip=self.others, retag_model=self.rs.model)
            outside = [i for i in items if str(i.path) not in self.ours]
            if outside:
                self.queue.release(outside)
                self.others.update(str(i.path) for i in outside)
            if len(outside) < len(items) or not items:
                mine = [i for i in items if str(i.path) in self.ours]
                self.claimed.update(str(i.path) for i in mine)
                return mine

    def jobs(self, first: list, report: RetagReport, roots: dict[str, str]) -> Iterator:
        """Jobs for ``first`` and then for every further claim, as the pipeline asks for them. Each
        carries its claim's ``enqueued_at``, so its commit never deletes a row queued again meanwhile."""
        items = first
        while items:
            for item in items:
                path = str(item.path)
                if not os.path.exists(path):  # deleted since: scan/watch marks it missing
                    self.queue.done(item)
                    report.skipped.append((path, "file not found"))
                    continue
                self.jobs_given += 1
                root = roots.get(path)
                yield Job(item.path, Path(root) if root else None, REASON_RETAG, queued_at=item.enqueued_at)
            items = self.next()

    def close(self, charge: bool) -> None:
        """Claims never settled (stopped, or the model failed) go back to the queue for ``--resume``
        (only rows this process still owns are touched: settled ones are gone or released)."""
        self.queue.release(sorted(self.claimed), charge=charge)
        self.queue.close()


def drain_retag(
    library: Library, rs: RetagSession, tagger=None, *, progress=None, batch_size: int | None = None,
    stop_event: threading.Event | None = None, on_commit=None, resumed: bool = False,
    pipeline_class: Callable[..., Pipeline] = Pipeline,
) -> RetagReport:
    """Run the model over the session's queued photos (step 2) and report the changes (step 3).

    ``pipeline_class`` builds the pipeline that runs the model (``Pipeline``; ``retag --ray`` gives
    one whose model work runs on a Ray cluster)."""
    started = time.perf_counter()
    settings = library.settings
    if rs.state == "pending":  # killed before or after the enqueue committed: enqueue (again: an upsert)
        _commit_enqueue(library, rs)
    report = RetagReport(model=rs.model, query=rs.query, session_id=rs.id, resumed=resumed,
                         photos=len(rs.photo_ids) + len(rs.skipped), skipped=list(rs.skipped))
    if progress is not None:  # rows queued again by the watcher are counted here, and left to it
        progress("total", len(WorkQueue(library).queued_paths(list(rs.paths.values()))))
    claims = _Claims(library, rs, batch_size or int(settings.get("batch_size") or 0) or 16)
    first = claims.next()
    pipeline = None
    finished = False
    try:
        if first:  # the model is loaded only when there is work for it
            with library.session() as session:
                roots = dict(session.execute(select(Photo.path, Photo.root)
                                             .where(Photo.id.in_(rs.photo_ids))).all())
            tagger = tagger or get_tagger(settings, rs.model)
            pipeline = pipeline_class(library, tagger, batch_size=batch_size, progress=progress,
                                      on_commit=on_commit, stop_event=stop_event)
            claims.chunk = pipeline.batch_size
            result = pipeline.process(claims.jobs(first, report, roots))
            report.retagged = result.retagged
            report.failed = list(result.errors)
            if progress is not None:
                progress("total", claims.jobs_given)  # what it did: the bar ends full
        finished = True
    finally:
        # a model that failed on a batch charges the claims (attempts); one that did not load does not
        claims.close(charge=pipeline is not None and not finished)
    if stop_event is not None and stop_event.is_set():
        report.seconds = time.perf_counter() - started
        return report  # interrupted: the session stays for --resume
    with library.session() as session:
        after = model_tags_snapshot(session, rs.photo_ids)
        report.model_run_ids = sorted({
            rid for rid in session.scalars(select(Photo.tagged_run_id).where(Photo.id.in_(rs.photo_ids))) if rid
        })
    report.changed, report.tags_added, report.tags_removed = diff_model_tags(rs.before, after, rs.paths)
    report.seconds = time.perf_counter() - started
    atomic.write_json(retag_dir(settings) / LAST_REPORT_FILE, report.as_dict(), indent=None)
    _end_session(settings)
    return report


def retag(
    library: Library, query: Sequence[str] | None = None, model: str | None = None, *,
    dry_run: bool = False, resume: bool = False, tagger=None, progress=None, batch_size: int | None = None,
    on_commit=None, pipeline_class: Callable[..., Pipeline] = Pipeline,
) -> RetagReport:
    """``phototag retag``: start (or continue) a re-tag and run it to the end."""
    if dry_run:
        return dry_run_retag(library, query, model, tagger=tagger, progress=progress, batch_size=batch_size,
                             pipeline_class=pipeline_class)
    if resume:
        rs = load_session(library.settings)
        if rs is None:
            raise RetagError("no unfinished re-tag to resume")
        return drain_retag(library, rs, tagger, progress=progress, batch_size=batch_size, on_commit=on_commit,
                           resumed=True, pipeline_class=pipeline_class)
    existing = load_session(library.settings)
    if tagger is None and existing is None:  # an unknown model fails here, before anything is queued
        tagger = get_tagger(library.settings, model)
    rs = start_retag(library, query, model or (tagger.name if tagger is not None else None))
    return drain_retag(library, rs, tagger, progress=progress, batch_size=batch_size, on_commit=on_commit,
                       resumed=existing is not None, pipeline_class=pipeline_class)


def dry_run_retag(
    library: Library, query: Sequence[str] | None = None, model: str | None = None, *,
    tagger=None, progress=None, batch_size: int | None = None, pipeline_class: Callable[..., Pipeline] = Pipeline,
) -> RetagReport:
    """Run the re-tag on a throw-away copy of the database and report what it would change."""
    settings = library.settings
    if library.db.path is None:  # a server database (PostgreSQL) cannot be copied to a throw-away file
        raise RetagError(
            "retag --dry-run works on a SQLite library only; on PostgreSQL, restore a pg_dump of the "
            "library into a scratch database and run the re-tag there (docs/postgresql.md)"
        )
    with tempfile.TemporaryDirectory(prefix="retag-dry-run-", dir=settings.home) as tmp:
        copy_path = Path(tmp) / "phototag.db"
        copy_database(settings.db_path, copy_path)
        shadow_settings = Settings(home=Path(tmp), data=settings.data)
        shadow = Library(shadow_settings, open_database(copy_path, upgrade=False))
        try:
            # the shadow home has no session file: an unfinished real session is not disturbed
            rs = start_retag(shadow, query, model or settings.default_model)
            tagger = tagger or get_tagger(settings, rs.model)
            report = drain_retag(shadow, rs, tagger, progress=progress, batch_size=batch_size,
                                 pipeline_class=pipeline_class)
        finally:
            shadow.close()
    report.dry_run = True
    return report
