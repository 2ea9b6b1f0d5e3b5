"""The library's write API: every change to photos and tags goes through here.

Rules it enforces:
* a photo is identified by path and by content hash: a moved file keeps its row and tags;
* a model run replaces only ``model`` tags; ``manual``/``imported`` tags are never touched, and a
  tag the user removed (``tag_removals``) is not given back by a later run;
* every tag row says where it came from (source, model run, score, time).
"""

from __future__ import annotations

import contextlib
import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Mapping

from sqlalchemy import bindparam, delete, func, insert, select, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from phototag.config import Settings, get_settings
from phototag.db.engine import Database, open_database
from phototag.db.models import (
    Caption,
    Embedding,
    ModelRun,
    Photo,
    PhotoStatus,
    PhotoTag,
    Tag,
    TagRemoval,
    TagSource,
    utcnow,
)
from phototag.errors import PhototagError
from phototag.tagging.base import Prediction, Tagger


class LibraryError(PhototagError):
    """A user-facing problem with the library (unknown photo, bad argument, …)."""


@dataclass
class PhotoFacts:
    """What we know about a file before (or without) running a model."""

    path: Path
    root: Path | None
    size: int
    mtime: float
    sha256: str
    width: int | None = None
    height: int | None = None
    format: str | None = None
    exif: Mapping[str, object] = field(default_factory=dict)
    #: the photo's sidecars on disk when their keywords were read (:func:`phototag.ingest.keywords.sidecar_stat`)
    sidecar_stat: str | None = None


class Library:
    """A library home: its settings and its database."""

    def __init__(self, settings: Settings | None = None, db: Database | None = None):
        self.settings = settings or get_settings()
        self.db = db or open_database(self.settings.db_path)
        self._tag_ids: dict[str, int] = {}
        self._tag_zh: dict[str, str | None] = {}  # name_zh of the tags in _tag_ids, as last seen

    @property
    def engine(self):
        return self.db.engine

    @contextlib.contextmanager
    def session(self, immediate: bool = False) -> Iterator[Session]:
        """One transaction: committed on success, rolled back on error (and the tag-id cache,
        which may name rows of the rolled-back transaction, is forgotten). ``immediate``: take the
        write lock first, so that what it reads stays true until it commits (other writers wait)."""
        try:
            with self.db.session(immediate=immediate) as session:
                yield session
        except BaseException:
            self.forget_tag_cache()
            raise

    def close(self) -> None:
        self.db.dispose()

    # ---- lookups --------------------------------------------------------------------------
    def photo_by_path(self, session: Session, path: Path | str) -> Photo | None:
        return session.scalar(select(Photo).where(Photo.path == str(path)))

    def _photo_row(self, session: Session, path: Path | str, root: Path | None) -> Photo:
        """The row for ``path``, created if there is none. Race-free: another process or thread creating
        the same path at the same moment is no UNIQUE failure (INSERT … ON CONFLICT DO NOTHING, then read)."""
        photo = self.photo_by_path(session, path)
        if photo is None:
            now = utcnow()
            session.execute(sqlite_insert(Photo).values(
                path=str(path), root=str(root) if root else None, status=PhotoStatus.ok.value, added_at=now,
                updated_at=now,
            ).on_conflict_do_nothing(index_elements=[Photo.path]))
            photo = self.photo_by_path(session, path)
        return photo

    def resolve_photo(self, session: Session, ref: str) -> Photo:
        """A photo from a path (absolute or relative to the cwd), a library id (``#12``) or a sha256 prefix."""
        if ref.startswith("#") and ref[1:].isdigit():
            photo = session.get(Photo, int(ref[1:]))
        else:
            photo = self.photo_by_path(session, Path(ref).expanduser().resolve())
            if photo is None and len(ref) >= 8 and all(c in "0123456789abcdef" for c in ref.lower()):
                photo = session.scalar(select(Photo).where(Photo.sha256.like(ref.lower() + "%")).limit(1))
        if photo is None:
            raise LibraryError(f"{ref}: not in the library (scan it first: phototag scan PATH)")
        return photo

    # ---- files ----------------------------------------------------------------------------
    def upsert_photo(self, session: Session, facts: PhotoFacts) -> Photo:
        """Create or refresh the row for a readable photo file (status ok)."""
        photo = self._photo_row(session, facts.path, facts.root)
        photo.root = str(facts.root) if facts.root else photo.root
        photo.size = facts.size
        photo.mtime = facts.mtime
        photo.sha256 = facts.sha256
        photo.width = facts.width
        photo.height = facts.height
        photo.format = facts.format
        for key, value in facts.exif.items():
            setattr(photo, key, value)
        if facts.sidecar_stat is not None:
            photo.sidecar_stat = facts.sidecar_stat
        photo.status = PhotoStatus.ok.value
        photo.error = None
        photo.updated_at = utcnow()
        session.flush()
        return photo

    def record_error(
        self, session: Session, path: Path, root: Path | None, error: str, size: int | None = None,
        mtime: float | None = None, sha256: str | None = None,
    ) -> Photo:
        """Remember that a file could not be read, with the reason (it is retried when it changes).
        The work queue is not touched: the caller settles its row (:func:`phototag.ingest.queue.settle`)
        in the same transaction."""
        photo = self._photo_row(session, path, root)
        photo.status = PhotoStatus.error.value
        photo.error = error
        photo.size = size
        photo.mtime = mtime
        photo.sha256 = sha256
        photo.updated_at = utcnow()
        session.flush()
        return photo

    def move_photo(self, session: Session, photo: Photo, new_path: Path, root: Path | None, mtime: float) -> Photo:
        """The same content now lives at ``new_path``: keep the row (and its tags)."""
        existing = self.photo_by_path(session, new_path)
        if existing is not None and existing.id != photo.id:
            session.delete(existing)  # a stale row (e.g. an error entry) at the destination
            session.flush()
        photo.path = str(new_path)
        if root is not None:
            photo.root = str(root)
        photo.mtime = mtime
        photo.status = PhotoStatus.ok.value
        photo.error = None
        photo.updated_at = utcnow()
        session.flush()
        return photo

    def mark_missing(self, session: Session, paths: Iterable[str]) -> int:
        paths = list(paths)
        if not paths:
            return 0
        result = session.execute(
            update(Photo).where(Photo.path.in_(paths), Photo.status != PhotoStatus.missing.value)
            .values(status=PhotoStatus.missing.value, updated_at=utcnow())
        )
        return result.rowcount or 0

    def touch_unchanged(self, session: Session, photo: Photo, mtime: float) -> None:
        """Same content, new mtime (e.g. a copy with ``cp -p`` or a touch): no model work."""
        photo.mtime = mtime
        if photo.status == PhotoStatus.missing.value:
            photo.status = PhotoStatus.ok.value

    # ---- tags -----------------------------------------------------------------------------
    def ensure_tags(
        self,
        session: Session,
        names: Iterable[str],
        parents: Mapping[str, str] | None = None,
        names_zh: Mapping[str, str] | None = None,
    ) -> dict[str, int]:
        """Tag ids for ``names``, creating missing tags (and their ancestors) as needed.

        ``names_zh``: Chinese names, set on new tags and filled in on existing tags that have none (a
        library tagged before its model had Chinese names); each tag is looked at once per process."""
        parents = parents or {}
        names_zh = names_zh or {}
        wanted: list[str] = []
        for name in names:
            node, guard = name, 0
            while node and node not in wanted and guard < 64:
                wanted.append(node)
                node, guard = parents.get(node), guard + 1
        missing = [n for n in wanted if n not in self._tag_ids]
        if missing:
            for tag_id, tag_name, tag_zh in session.execute(
                    select(Tag.id, Tag.name, Tag.name_zh).where(Tag.name.in_(missing))):
                self._tag_ids[tag_name] = tag_id
                self._tag_zh[tag_name] = tag_zh

        def create(name: str, depth: int = 0) -> int:
            if name in self._tag_ids:
                return self._tag_ids[name]
            parent = parents.get(name)
            parent_id = create(parent, depth + 1) if parent and depth < 64 else None
            if name in self._tag_ids:  # a parent cycle came back round to this tag
                return self._tag_ids[name]
            # another process (a second scan, the watcher, `tag add`) may create the same tag right now:
            # insert it unless it exists, then read its id (never a UNIQUE failure)
            session.execute(sqlite_insert(Tag).values(name=name, name_zh=names_zh.get(name), parent_id=parent_id)
                            .on_conflict_do_nothing(index_elements=[Tag.name]))
            tag_id, tag_zh = session.execute(select(Tag.id, Tag.name_zh).where(Tag.name == name)).one()
            self._tag_ids[name] = tag_id
            self._tag_zh[name] = tag_zh
            return tag_id

        for name in wanted:  # parents are created before their children
            create(name)
        if names_zh:
            fill = {n: names_zh[n] for n in wanted if names_zh.get(n) and self._tag_zh.get(n) is None}
            if fill:
                self._fill_names_zh(session, fill)
        return {n: self._tag_ids[n] for n in wanted}

    def _fill_names_zh(self, session: Session, names_zh: Mapping[str, str]) -> None:
        """Set the Chinese name of these tags where they have none (one executemany)."""
        table = Tag.__table__
        session.execute(
            update(table).where(table.c.name == bindparam("b_name"), table.c.name_zh.is_(None))
            .values(name_zh=bindparam("b_zh")),
            [{"b_name": n, "b_zh": zh} for n, zh in names_zh.items()],
        )
        for name, zh in names_zh.items():
            if name in self._tag_ids:
                self._tag_zh[name] = zh

    def fill_tag_names_zh(self, session: Session, names_zh: Mapping[str, str]) -> int:
        """Give every tag without a Chinese name the one in ``names_zh`` (a model's vocabulary), e.g. in
        a library tagged before the built-in model had Chinese names. One query; returns the count."""
        if not names_zh:
            return 0
        empty = session.scalars(select(Tag.name).where(Tag.name_zh.is_(None))).all()
        fill = {n: names_zh[n] for n in empty if names_zh.get(n)}
        if fill:
            self._fill_names_zh(session, fill)
        return len(fill)

    def forget_tag_cache(self) -> None:
        self._tag_ids.clear()
        self._tag_zh.clear()

    def add_manual_tags(self, session: Session, photo: Photo, names: Iterable[str],
                        parents: Mapping[str, str] | None = None) -> list[str]:
        """User-given tags (source ``manual``). A removal of the same tag is cancelled. ``parents``:
        where new tags go in the hierarchy (child → parent)."""
        names = [n.strip() for n in names if n.strip()]
        ids = self.ensure_tags(session, names, parents)
        added = []
        for name in names:
            tag_id = ids[name]
            session.execute(delete(TagRemoval).where(TagRemoval.photo_id == photo.id, TagRemoval.tag_id == tag_id))
            exists = session.scalar(
                select(PhotoTag.id).where(
                    PhotoTag.photo_id == photo.id, PhotoTag.tag_id == tag_id, PhotoTag.source == TagSource.manual.value
                )
            )
            if exists is None:
                session.add(PhotoTag(photo_id=photo.id, tag_id=tag_id, source=TagSource.manual.value, score=1.0))
                added.append(name)
        session.flush()
        return added

    def remove_tags(self, session: Session, photo: Photo, names: Iterable[str]) -> list[str]:
        """The user says these tags are wrong: drop them (any source) and keep model runs from re-adding them."""
        removed = []
        for name in names:
            tag = session.scalar(select(Tag).where(Tag.name == name))
            if tag is None:
                continue
            rows = session.scalars(select(PhotoTag).where(PhotoTag.photo_id == photo.id, PhotoTag.tag_id == tag.id)).all()
            model_score = max((r.score or 0.0 for r in rows if r.source == TagSource.model.value), default=None)
            for row in rows:
                session.delete(row)
            if session.scalar(select(TagRemoval.id).where(TagRemoval.photo_id == photo.id, TagRemoval.tag_id == tag.id)) is None:
                session.add(TagRemoval(photo_id=photo.id, tag_id=tag.id, score=model_score))
            removed.append(name)
        session.flush()
        return removed

    def apply_sidecar_edits(
        self, session: Session, photo: Photo, added: Iterable[tuple[str, ...]] = (),
        removed: Iterable[tuple[str, ...]] = (),
    ) -> tuple[list[str], list[str]]:
        """The user's edits under phototag's root in the photo's sidecar (two-way sync, docs/sync.md),
        applied as ``tag add`` / ``tag remove`` would: each ``added`` path (tag names from the top)
        becomes a manual tag placed under its path's levels; each ``removed`` one takes its tag away
        (any source) and keeps model runs from giving it back. Returns (added names, removed names)."""
        added_names: list[str] = []
        for path in added:
            path = tuple(p.strip() for p in path if p.strip())
            if path:
                parents = {child: parent for parent, child in zip(path, path[1:])}
                added_names += self.add_manual_tags(session, photo, [path[-1]], parents)
        removed_names: list[str] = []
        for path in removed:
            path = tuple(p.strip() for p in path if p.strip())
            if not path:
                continue
            leaf = path[-1]
            if session.scalar(select(Tag.id).where(Tag.name == leaf)) is None:
                # a Chinese name phototag wrote (languages = ["zh"]); else a tag the library does not have yet
                # (a new library reading an older one's sidecar): made, so that the removal holds
                by_zh = session.scalar(select(Tag.name).where(Tag.name_zh == leaf).limit(1))
                if by_zh is not None:
                    leaf = by_zh
                else:
                    self.ensure_tags(session, [leaf], {c: p for p, c in zip(path, path[1:])})
            removed_names += self.remove_tags(session, photo, [leaf])
        return added_names, removed_names

    def copy_model_results(self, session: Session, photo: Photo, source: Photo, model_id: str) -> int:
        """Give ``photo`` the model tags, embedding and caption that ``source`` (the same content) got
        from ``model_id``: a byte-identical copy needs no model work. The photo keeps its own manual and
        imported tags and its removals; tags removed from ``source`` by the user are given with the
        score they had (a removal is one photo's). Returns the number of model tags given."""
        removed_here = set(session.scalars(select(TagRemoval.tag_id).where(TagRemoval.photo_id == photo.id)))
        best: dict[int, tuple[float | None, int | None]] = {}
        for tag_id, score, run_id in session.execute(
            select(PhotoTag.tag_id, PhotoTag.score, PhotoTag.model_run_id)
            .where(PhotoTag.photo_id == source.id, PhotoTag.source == TagSource.model.value)
        ):
            best[tag_id] = (score, run_id)
        for tag_id, score in session.execute(
            select(TagRemoval.tag_id, TagRemoval.score)
            .where(TagRemoval.photo_id == source.id, TagRemoval.score.is_not(None))
        ):
            best.setdefault(tag_id, (score, source.tagged_run_id))
        session.execute(
            delete(PhotoTag).where(PhotoTag.photo_id == photo.id, PhotoTag.source == TagSource.model.value)
        )
        now = utcnow()
        rows = [{"photo_id": photo.id, "tag_id": tag_id, "source": TagSource.model.value, "score": score,
                 "model_run_id": run_id, "created_at": now}
                for tag_id, (score, run_id) in best.items() if tag_id not in removed_here]
        if rows:
            session.execute(insert(PhotoTag), rows)
        for kind in (Embedding, Caption):
            theirs = session.scalar(select(kind).where(kind.photo_id == source.id, kind.model_id == model_id))
            if theirs is None:
                continue
            mine = session.scalar(select(kind).where(kind.photo_id == photo.id, kind.model_id == model_id))
            if mine is None:
                mine = kind(photo_id=photo.id, model_id=model_id)
                session.add(mine)
            mine.model_run_id = theirs.model_run_id
            if kind is Embedding:
                mine.dim, mine.vector = theirs.dim, theirs.vector
            else:
                mine.text = theirs.text
            mine.created_at = now
        photo.tagged_at = now
        photo.tagged_run_id = source.tagged_run_id
        session.flush()
        return len(rows)

    def set_imported_tags(self, session: Session, photo: Photo, keywords: Iterable[str]) -> None:
        """The keywords the photo (or its sidecar) already carries, as ``imported`` tags.

        ``a/b/c`` paths become tag ``c`` under ``b`` under ``a`` (for tags phototag did not know yet)."""
        leaves: list[str] = []
        parents: dict[str, str] = {}
        for keyword in keywords:
            parts = [p.strip() for p in keyword.split("/") if p.strip()]
            if not parts:
                continue
            for parent, child in zip(parts, parts[1:]):
                parents.setdefault(child, parent)
            leaves.append(parts[-1])
        session.execute(
            delete(PhotoTag).where(PhotoTag.photo_id == photo.id, PhotoTag.source == TagSource.imported.value)
        )
        if not leaves:
            return
        ids = self.ensure_tags(session, leaves, parents)
        session.add_all(
            PhotoTag(photo_id=photo.id, tag_id=ids[name], source=TagSource.imported.value, score=None)
            for name in dict.fromkeys(leaves)
        )

    # ---- model runs -----------------------------------------------------------------------
    def start_model_run(self, session: Session, tagger: Tagger) -> ModelRun:
        run = ModelRun(
            model_name=tagger.name,
            model_id=tagger.model_id,
            weights_sha256=tagger.weights_sha256,
            settings=tagger.settings(),
            started_at=utcnow(),
            photo_count=0,
        )
        session.add(run)
        session.flush()
        return run

    def finish_model_run(self, session: Session, run_id: int) -> None:
        session.execute(update(ModelRun).where(ModelRun.id == run_id).values(finished_at=utcnow()))

    def store_prediction(
        self, session: Session, photo: Photo, run: ModelRun, tagger: Tagger, prediction: Prediction
    ) -> None:
        """Replace the photo's model tags with this prediction; keep manual/imported tags and removals."""
        names = [t.name for t in prediction.tags]
        zh = {t.name: t.name_zh for t in prediction.tags if t.name_zh}
        if not zh:
            zh = dict(tagger.tag_names_zh())
        ids = self.ensure_tags(session, names, tagger.tag_parents(), zh)
        removed = set(
            session.scalars(select(TagRemoval.tag_id).where(TagRemoval.photo_id == photo.id)).all()
        )
        session.execute(
            delete(PhotoTag).where(PhotoTag.photo_id == photo.id, PhotoTag.source == TagSource.model.value)
        )
        now = utcnow()
        best: dict[int, float] = {}
        for tag in prediction.tags:
            tag_id = ids[tag.name]
            if tag_id in removed:
                continue
            best[tag_id] = max(best.get(tag_id, 0.0), float(tag.score))
        if best:  # one executemany, not an ORM object per tag (RAM can give hundreds per photo)
            session.execute(insert(PhotoTag), [
                {"photo_id": photo.id, "tag_id": tag_id, "source": TagSource.model.value, "score": score,
                 "model_run_id": run.id, "created_at": now}
                for tag_id, score in best.items()
            ])
        if prediction.embedding is not None:
            import numpy as np  # here, not at the top: search/show never store a prediction

            vector = np.ascontiguousarray(prediction.embedding, dtype="<f4")
            emb = session.scalar(
                select(Embedding).where(Embedding.photo_id == photo.id, Embedding.model_id == tagger.model_id)
            )
            if emb is None:
                emb = Embedding(photo_id=photo.id, model_id=tagger.model_id)
                session.add(emb)
            emb.model_run_id = run.id
            emb.dim = int(vector.shape[0])
            emb.vector = vector.tobytes()
            emb.created_at = now
        if prediction.caption is not None:
            cap = session.scalar(
                select(Caption).where(Caption.photo_id == photo.id, Caption.model_id == tagger.model_id)
            )
            if cap is None:
                cap = Caption(photo_id=photo.id, model_id=tagger.model_id)
                session.add(cap)
            cap.model_run_id = run.id
            cap.text = prediction.caption
            cap.created_at = now
        photo.tagged_at = now
        photo.tagged_run_id = run.id
        session.execute(update(ModelRun).where(ModelRun.id == run.id).values(photo_count=ModelRun.photo_count + 1))

    # ---- reading --------------------------------------------------------------------------
    def photo_tags(self, session: Session, photo_id: int) -> list[dict]:
        rows = session.execute(
            select(Tag.name, Tag.name_zh, PhotoTag.score, PhotoTag.source, ModelRun.model_name)
            .join(Tag, Tag.id == PhotoTag.tag_id)
            .outerjoin(ModelRun, ModelRun.id == PhotoTag.model_run_id)
            .where(PhotoTag.photo_id == photo_id)
            .order_by(PhotoTag.score.desc().nulls_last(), Tag.name)
        ).all()
        return [
            {"name": r.name, "name_zh": r.name_zh, "score": None if r.score is None else round(r.score, 4),
             "source": r.source, "model": r.model_name}
            for r in rows
        ]

    def tag_counts(self, session: Session) -> list[dict]:
        rows = session.execute(
            select(Tag.name, Tag.name_zh, Tag.parent_id, func.count(func.distinct(PhotoTag.photo_id)).label("n"))
            .join(PhotoTag, PhotoTag.tag_id == Tag.id)
            .join(Photo, Photo.id == PhotoTag.photo_id)
            .where(Photo.status == PhotoStatus.ok.value)
            .group_by(Tag.id)
            .order_by(func.count(func.distinct(PhotoTag.photo_id)).desc(), Tag.name)
        ).all()
        parent_names = dict(session.execute(select(Tag.id, Tag.name)).all())
        return [
            {"name": r.name, "name_zh": r.name_zh, "parent": parent_names.get(r.parent_id), "count": r.n}
            for r in rows
        ]

    def iter_photos(self, session: Session, ids: Iterable[int]) -> Iterator[Photo]:
        ids = list(ids)
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            by_id = {p.id: p for p in session.scalars(select(Photo).where(Photo.id.in_(chunk)))}
            for pid in chunk:
                if pid in by_id:
                    yield by_id[pid]


def photo_as_dict(lib: Library, session: Session, photo: Photo) -> dict:
    """The JSON shape of ``phototag show`` (and the base of search results)."""

    def iso(value: dt.datetime | None) -> str | None:
        return value.isoformat() if value else None

    caption = session.scalars(select(Caption.text).where(Caption.photo_id == photo.id)).first()
    return {
        "id": photo.id,
        "path": photo.path,
        "sha256": photo.sha256,
        "size": photo.size,
        "format": photo.format,
        "width": photo.width,
        "height": photo.height,
        "taken_at": iso(photo.taken_at),
        "taken_at_offset": photo.taken_at_offset,
        "camera_make": photo.camera_make,
        "camera_model": photo.camera_model,
        "lens": photo.lens,
        "iso": photo.iso,
        "exposure_time": photo.exposure_time,
        "f_number": photo.f_number,
        "focal_length": photo.focal_length,
        "gps_lat": photo.gps_lat,
        "gps_lon": photo.gps_lon,
        "orientation": photo.orientation,
        "status": photo.status,
        "error": photo.error,
        "added_at": iso(photo.added_at),
        "tagged_at": iso(photo.tagged_at),
        "caption": caption,
        "tags": lib.photo_tags(session, photo.id),
    }
