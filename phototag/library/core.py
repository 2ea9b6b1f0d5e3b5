"""The library's core: the open database and settings, sessions, and the photo rows (add, update,
move, mark missing, record an error). Tags and model results are its mixins (``tags``, ``results``)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Mapping

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from phototag.config import Settings, get_settings
from phototag.db import sql
from phototag.db.engine import Database, library_target, open_database
from phototag.db.models import (
    Photo,
    PhotoStatus,
    utcnow,
)
from phototag.errors import PhototagError
from phototag.library.results import ModelResults
from phototag.library.tags import TagRows


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


class Library(TagRows, ModelResults):
    """A library home: its settings and its database."""

    def __init__(self, settings: Settings | None = None, db: Database | None = None):
        self.settings = settings or get_settings()
        self.db = db or open_database(library_target(self.settings))
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
            session.execute(sql.insert(session, Photo).values(
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

    def iter_photos(self, session: Session, ids: Iterable[int]) -> Iterator[Photo]:
        ids = list(ids)
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            by_id = {p.id: p for p in session.scalars(select(Photo).where(Photo.id.in_(chunk)))}
            for pid in chunk:
                if pid in by_id:
                    yield by_id[pid]
