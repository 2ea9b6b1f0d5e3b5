"""The export service: write the library's tags with exporters, remembering what was written.

The library database is the source of truth; sidecars and other applications' databases are outputs.
:func:`export_photos` reads each photo's tags, asks every chosen exporter for the hash of what it
would write, skips photos whose hash matches the one stored in ``export_state`` (and whose target
still exists), writes the others and records the new hash. Before a batch's files are written,
their states are marked ``pending:<run>`` in a committed transaction, and the new hash replaces
that mark only after the write: a process killed in between leaves "write again", never a state
that claims a file is current when it is not. ``dry_run`` writes nothing, files or database.

This module is the only writer of ``export_state`` (and of ``photos.sidecar_stat`` after a write).
Exporters come from plugins (:func:`phototag.plugins.exporters`); what they implement is
:mod:`phototag.export.contract`.
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

from sqlalchemy import select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from phototag import plugins
from phototag.config import get_settings
from phototag.db.models import ExportState, Photo, PhotoStatus, PhotoTag, Tag, TagSource, utcnow
from phototag.export.contract import (
    FAILED,
    SKIPPED,
    UNCHANGED,
    WOULD_WRITE,
    WRITTEN,
    ExportError,
    Exporter,
    ExportItem,
    ExportReport,
    ExportResult,
    ExportTag,
    clean_tag_name,
)

if TYPE_CHECKING:  # pragma: no cover
    from phototag.config import Settings
    from phototag.db.engine import Database
    from phototag.library import Library

log = logging.getLogger(__name__)

#: ``export_state.content_hash`` of a photo whose file an export run is rewriting right now
#: (followed by the run's id); replaced by the real hash once the write is recorded.
PENDING_PREFIX = "pending:"
#: ``export_state.content_hash`` when it is unknown what the target holds: written again next time
STALE = "stale"
#: the end of a SKIPPED result's detail when a sidecar holds edits phototag has not read yet
UNREAD_EDITS_HINT = "; `phototag scan` (or the watcher) reads them first, then exports"


# ---- reading photos and their tags -------------------------------------------------------------


def _session_factory(db: "Library | Database | Engine | sessionmaker[Session]") -> Callable[[], Session]:
    if hasattr(db, "db") and hasattr(db, "settings"):  # a Library
        db = db.db
    if isinstance(db, Engine):
        return sessionmaker(db, expire_on_commit=False)
    maker = getattr(db, "sessionmaker", None)
    if maker is not None:
        return maker
    if callable(db):
        return db
    raise TypeError(f"expected a Database, Engine or sessionmaker, got {db!r}")


class _TagPaths:
    """tag id → path tuples, following ``parent_id`` (cycles are cut, not followed forever), with
    names cleaned by :func:`clean_tag_name` and a note for each name that had to be changed."""

    def __init__(self, session: Session) -> None:
        self.rows = {tid: (name, zh, pid) for tid, name, zh, pid in
                     session.execute(select(Tag.id, Tag.name, Tag.name_zh, Tag.parent_id))}
        self._cache: dict[int, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {}

    def get(self, tag_id: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
        en, zh, _ = self.get_with_notes(tag_id)
        return en, zh

    def get_with_notes(self, tag_id: int) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
        """(English path, Chinese path, notes); an empty path when a name cleans to nothing."""
        if tag_id in self._cache:
            return self._cache[tag_id]
        en: list[str] = []
        zh: list[str] = []
        notes: list[str] = []
        seen: set[int] = set()
        current: int | None = tag_id
        while current is not None and current not in seen and current in self.rows:
            seen.add(current)
            name, name_zh, parent = self.rows[current]
            for raw, out in ((name, en), (name_zh or name, zh)):
                clean = clean_tag_name(raw)
                if clean != raw and not (out is zh and raw == name):
                    notes.append(f"tag {raw!r} has control characters: written as {clean!r}" if clean
                                 else f"tag {raw!r} is only control characters: not written")
                out.append(clean)
            current = parent
        if not all(en) or not all(zh):
            en, zh = [], []
        result = (tuple(reversed(en)), tuple(reversed(zh)), tuple(reversed(notes)))
        self._cache[tag_id] = result
        return result


def load_items(session: Session, photo_ids: Sequence[int], tag_paths: _TagPaths | None = None,
               min_score: float = 0.0) -> list[ExportItem]:
    """Build export items for ``photo_ids`` (in that order; ids that do not exist are dropped).

    ``min_score`` (the ``export.min_score`` setting): a model's tag scored below it stays in the
    library (searchable) but is not written out; tags the user gave (manual) always are."""
    tag_paths = tag_paths or _TagPaths(session)
    photos = {p.id: p for p in session.scalars(select(Photo).where(Photo.id.in_(photo_ids)))}
    by_photo: dict[int, dict[int, set[str]]] = {}
    for photo_id, tag_id, source, score in session.execute(
        select(PhotoTag.photo_id, PhotoTag.tag_id, PhotoTag.source, PhotoTag.score)
        .where(PhotoTag.photo_id.in_(photo_ids))
    ):
        if source == TagSource.model.value and score is not None and score < min_score:
            continue
        by_photo.setdefault(photo_id, {}).setdefault(tag_id, set()).add(source)
    items = []
    for photo_id in photo_ids:
        photo = photos.get(photo_id)
        if photo is None:
            continue
        tags: dict[tuple[str, ...], ExportTag] = {}
        imported: set[tuple[str, ...]] = set()
        notes: list[str] = []
        for tag_id, sources in sorted(by_photo.get(photo_id, {}).items()):
            en, zh, tag_notes = tag_paths.get_with_notes(tag_id)
            exported_sources = tuple(sorted(sources - {TagSource.imported.value}))
            if exported_sources:
                notes.extend(n for n in tag_notes if n not in notes)
            if not en:
                continue
            if TagSource.imported.value in sources:
                imported.add(en)
            if exported_sources:
                if en in tags:  # two names that are the same once cleaned
                    exported_sources = tuple(sorted({*tags[en].sources, *exported_sources}))
                tags[en] = ExportTag(path=en, path_zh=zh, sources=exported_sources)
        items.append(ExportItem(photo_id=photo.id, path=Path(photo.path), sha256=photo.sha256,
                                tags=[tags[k] for k in sorted(tags)], imported=sorted(imported), notes=notes))
    return items


# ---- the service -------------------------------------------------------------------------------


def resolve_exporters(names: Sequence[str] | None, settings: "Settings | None" = None) -> list[Exporter]:
    """The exporters called ``names``; None: every exporter of the enabled plugins.

    A name given explicitly may be any *installed* exporter, enabled or not: naming it is the
    user's consent (``[plugins] enabled`` decides only what runs by itself after tagging)."""
    if names is None:
        available = plugins.exporters(settings)
        return [available[n] for n in sorted(available)]
    available, problems = plugins.installed_exporters(settings, wanted=names)
    chosen = []
    for name in dict.fromkeys(names):
        if name not in available:
            hint = ", ".join(sorted(available)) or "none"
            broken = "".join(f"; plugin {p!r} is installed but unusable: {why}" for p, why in sorted(problems.items()))
            raise ExportError(
                f"no exporter named {name!r} (installed: {hint}){broken}. "
                "`phototag plugins` lists the installed plugins."
            )
        chosen.append(available[name])
    return chosen


def export_photos(
    db: "Library | Database | Engine | sessionmaker[Session]",
    photo_ids: Iterable[int] | None = None,
    exporters: Sequence[str] | Sequence[Exporter] | None = None,
    *,
    dry_run: bool = False,
    force: bool = False,
    settings: "Settings | None" = None,
    progress: Callable[[ExportResult], None] | None = None,
    batch_size: int = 200,
) -> ExportReport:
    """Export the tags of ``photo_ids`` (None: every photo that is present) with ``exporters``
    (names, exporter objects, or None for every enabled exporter).

    Photos whose content hash matches the last export (and whose target still exists) are
    ``unchanged`` unless ``force``. A photo that fails is reported and the others go on; an
    exporter that cannot start (:meth:`Exporter.open` raises) raises :class:`ExportError`."""
    if exporters is not None and all(isinstance(e, Exporter) for e in exporters):
        chosen: list[Exporter] = list(exporters)  # type: ignore[arg-type]
    else:
        chosen = resolve_exporters(list(exporters) if exporters is not None else None, settings)  # type: ignore[arg-type]
    make_session = _session_factory(db)
    report = ExportReport(dry_run=dry_run, exporters=[e.name for e in chosen])
    if settings is None:
        settings = get_settings()
    min_score = float(settings.get("export.min_score"))
    if not chosen:
        return report

    with make_session() as session:
        if photo_ids is None:
            ids = list(session.scalars(
                select(Photo.id).where(Photo.status == PhotoStatus.ok.value).order_by(Photo.id)))
        else:
            ids = list(dict.fromkeys(photo_ids))
        tag_paths = _TagPaths(session)

    token = f"{PENDING_PREFIX}{uuid.uuid4().hex}"  # this run's mark on states it is about to change
    opened: list[Exporter] = []
    deferred: list[ExportResult] = []  # written by transactional exporters, stored after close
    ok = False
    try:
        for exporter in chosen:
            try:
                exporter.open(dry_run)
            except ExportError:
                raise
            except Exception as exc:
                raise ExportError(f"exporter {exporter.name!r} cannot start: {exc}") from exc
            opened.append(exporter)
        for start in range(0, len(ids), batch_size):
            batch_ids = ids[start:start + batch_size]
            with make_session() as session:
                items = load_items(session, batch_ids, tag_paths, min_score)
                rows = session.execute(
                    select(Photo.id, Photo.status, Photo.sidecar_stat).where(Photo.id.in_(batch_ids))).all()
                statuses = {r.id: r.status for r in rows}
                sidecars = {r.id: r.sidecar_stat for r in rows}
                states = {
                    (s.photo_id, s.exporter): s
                    for s in session.scalars(select(ExportState).where(
                        ExportState.photo_id.in_(batch_ids),
                        ExportState.exporter.in_([e.name for e in chosen])))
                }
            slots: list[ExportResult | tuple[Exporter, ExportItem, str, bool]] = []
            for item in items:
                for exporter in chosen:
                    slots.append(_plan_one(exporter, item, states.get((item.photo_id, exporter.name)),
                                           statuses.get(item.photo_id), force, sidecars.get(item.photo_id)))
            to_write = [s for s in slots if isinstance(s, tuple)]
            if to_write and not dry_run:
                # Before a file changes, its state stops claiming anything: a kill between the
                # write and the record below then means "write again", never "unchanged".
                _mark_pending(make_session, [(i.photo_id, e.name, e.target(i)) for e, i, *_ in to_write], token)
            written: list[ExportResult] = []
            for slot in slots:
                if isinstance(slot, tuple):
                    slot = _write_one(*slot, dry_run)
                    if slot.action == WRITTEN:
                        (deferred if _exporter(chosen, slot.exporter).transactional else written).append(slot)
                report.results.append(slot)
                if progress is not None:
                    progress(slot)
            if written and not dry_run:
                _store_states(make_session, written, token)
        ok = True
    finally:
        for exporter in opened:
            try:
                exporter.close(ok)
            except Exception as exc:  # closing must not hide the first error
                log.error("closing exporter %s failed: %s", exporter.name, exc)
                if ok:
                    raise ExportError(f"exporter {exporter.name!r} failed to finish: {exc}") from exc
    if deferred and not dry_run:
        _store_states(make_session, deferred, token)
    return report


def _exporter(chosen: Sequence[Exporter], name: str) -> Exporter:
    return next(e for e in chosen if e.name == name)


def _plan_one(exporter: Exporter, item: ExportItem, state: ExportState | None, status: str | None,
              force: bool, stored_sidecar: str | None = None) -> "ExportResult | tuple[Exporter, ExportItem, str, bool]":
    """The result for a photo that needs no write, or (exporter, item, content hash, whether its sidecar
    changed since phototag last read or wrote it) to write."""
    if status is not None and status != PhotoStatus.ok.value:
        return ExportResult(exporter.name, item.photo_id, str(item.path), SKIPPED, detail=f"photo is {status}")
    try:
        digest = exporter.content_hash(item)
        if (not force and state is not None and state.content_hash == digest
                and exporter.is_current(item, state.target)):
            return ExportResult(exporter.name, item.photo_id, str(item.path), UNCHANGED, state.target,
                                content_hash=digest)
        changed_since = False
        if stored_sidecar is not None:
            now = exporter.sidecar_stat(item)
            changed_since = bool(now) and now != stored_sidecar  # a deleted sidecar holds nothing to lose
            reason = exporter.unread_edits(item) if changed_since else None
            if reason:  # edited by another app and not read yet: keep it
                return ExportResult(exporter.name, item.photo_id, str(item.path), SKIPPED,
                                    detail=f"{reason}{UNREAD_EDITS_HINT}")
    except Exception as exc:  # one bad photo must not stop a library-wide export
        log.warning("export of %s with %s failed: %s", item.path, exporter.name, exc)
        return ExportResult(exporter.name, item.photo_id, str(item.path), FAILED, detail=str(exc))
    return exporter, item, digest, changed_since


def _write_one(exporter: Exporter, item: ExportItem, digest: str, changed_since: bool,
               dry_run: bool) -> ExportResult:
    try:
        result = exporter.write(item, dry_run)
    except Exception as exc:  # one bad photo must not stop a library-wide export
        log.warning("export of %s with %s failed: %s", item.path, exporter.name, exc)
        return ExportResult(exporter.name, item.photo_id, str(item.path), FAILED, detail=str(exc))
    result.content_hash = digest
    if result.action == WRITTEN and not changed_since:  # else the next scan reads what another app added
        try:
            result.sidecar_stat = exporter.sidecar_stat(item)
        except OSError:  # pragma: no cover - stat of a file just written
            result.sidecar_stat = None
    if item.notes and result.action in (WRITTEN, WOULD_WRITE):
        log.warning("export of %s with %s: %s", item.path, exporter.name, "; ".join(item.notes))
        result.detail = "; ".join([*([result.detail] if result.detail else []), *item.notes])
    return result


def _mark_pending(make_session: Callable[[], Session], keys: list[tuple[int, str, str | None]], token: str) -> None:
    """Mark the states of (photo id, exporter, target) as being rewritten by the run ``token``,
    in one committed transaction, before any of those files is touched."""
    with make_session() as session, session.begin():
        existing = {
            (s.photo_id, s.exporter): s
            for s in session.scalars(select(ExportState).where(
                ExportState.photo_id.in_({k[0] for k in keys}),
                ExportState.exporter.in_({k[1] for k in keys})))
        }
        for photo_id, exporter, target in keys:
            state = existing.get((photo_id, exporter))
            if state is None:
                state = ExportState(photo_id=photo_id, exporter=exporter, content_hash=token, target=target)
                session.add(state)
                existing[(photo_id, exporter)] = state
            state.content_hash = token
            state.target = target


def _store_states(make_session: Callable[[], Session], written: list[ExportResult], token: str) -> None:
    """Record what was written, where the state still carries this run's mark. A state that
    another export run marked or recorded in the meantime (two exports of one photo at once) is
    set to :data:`STALE`: which write landed last is unknown, so the next export writes again."""
    with make_session() as session, session.begin():
        keys = {(r.photo_id, r.exporter) for r in written}
        existing = {
            (s.photo_id, s.exporter): s
            for s in session.scalars(select(ExportState).where(
                ExportState.photo_id.in_({k[0] for k in keys}),
                ExportState.exporter.in_({k[1] for k in keys})))
        }
        stats = {r.photo_id: r.sidecar_stat for r in written if r.sidecar_stat is not None}
        if stats:  # what phototag wrote is not an edit to read back (two-way sync, docs/sync.md)
            session.execute(update(Photo), [{"id": pid, "sidecar_stat": stat} for pid, stat in stats.items()])
        for result in written:
            state = existing.get((result.photo_id, result.exporter))
            if state is None:  # the photo was deleted meanwhile (the row went with it)
                continue
            if state.content_hash == token:
                state.content_hash = result.content_hash or STALE
                state.target = result.target
            else:
                state.content_hash = STALE
            state.exported_at = utcnow()
