"""The library schema (SQLAlchemy 2 typed ORM).

SQLite is the source of truth: FAISS indexes, sidecars and other apps' databases are outputs
rebuilt from these tables. Schema changes go through Alembic (``migrations/``); this module must
always describe the head revision (a test compares the two).
"""

from __future__ import annotations

import datetime as dt
import enum
import re

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


# ---- file paths ---------------------------------------------------------------------------------
#
# A POSIX file name is bytes. Python gives a name that is not valid UTF-8 (``latin1_\xe9t\xe9.jpg``
# from an old archive or a NAS share) as a ``str`` with lone surrogates U+DC80..U+DCFF for the
# undecodable bytes (PEP 383 ``surrogateescape``, what ``os.fsdecode`` and ``os.listdir`` return).
# SQLite text must be valid UTF-8, so a path column stores such a name in a reversible form:
#
# * each surrogate U+DCxx (the byte 0xXX, 80..ff) is stored as PATH_ESCAPE followed by the two
#   lowercase hex digits ``xx``;
# * a PATH_ESCAPE character in a real name is stored doubled;
# * every other character is stored as it is, so the paths of a library made before this scheme
#   (all valid UTF-8) read back unchanged and need no migration. The one exception would be an
#   old row whose path holds U+FFFF itself followed by U+FFFF or by [89a-f][0-9a-f]: U+FFFF is a
#   Unicode noncharacter, and no such name is known in practice.
#
# PATH_ESCAPE is U+FFFF: valid UTF-8 (SQLite, exports and other tools read it), not a character
# any encoding of a file name produces, and none of SQL LIKE's ``%``/``_``/escape characters, so
# ``LIKE 'prefix%'`` and ``=``/``IN`` on an encoded value find exactly the encoded rows. Code
# outside this module never sees the stored form: :class:`FsPath` converts on the way in and out.

PATH_ESCAPE = "\uffff"
_SURROGATE_OR_ESCAPE = re.compile("[\ud800-\udfff\uffff]")
_STORED_ESCAPE = re.compile("\uffff(\uffff|[89a-f][0-9a-f])")


def _encode_char(match: re.Match) -> str:
    ch = match.group()
    if ch == PATH_ESCAPE:
        return PATH_ESCAPE + PATH_ESCAPE
    code = ord(ch)
    if not 0xDC80 <= code <= 0xDCFF:
        raise ValueError(f"not a file system path: lone surrogate U+{code:04X} (only U+DC80..U+DCFF stand for bytes)")
    return f"{PATH_ESCAPE}{code - 0xDC00:02x}"


def _decode_escape(match: re.Match) -> str:
    code = match.group(1)
    return PATH_ESCAPE if code == PATH_ESCAPE else chr(0xDC00 + int(code, 16))


def encode_path(path: str) -> str:
    """The stored (valid UTF-8) form of a path str as ``os.fsdecode`` gives it. Identity for every
    path that is valid UTF-8 and has no U+FFFF."""
    if not _SURROGATE_OR_ESCAPE.search(path):
        return path
    return _SURROGATE_OR_ESCAPE.sub(_encode_char, path)


def decode_path(stored: str) -> str:
    """The inverse of :func:`encode_path`: ``decode_path(encode_path(p)) == p`` for every path."""
    if PATH_ESCAPE not in stored:
        return stored
    return _STORED_ESCAPE.sub(_decode_escape, stored)


class FsPath(TypeDecorator):
    """A file path column: any name the file system holds, stored losslessly (see above).

    Values bound against the column (``==``, ``IN``, ``startswith``/``LIKE``) are encoded the same
    way, so queries on paths work on both kinds of names. ``pathlib.Path`` values are accepted."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value, dialect):
        return None if value is None else encode_path(str(value))

    def process_result_value(self, value, dialect):
        return None if value is None else decode_path(value)

    def coerce_compared_value(self, op, value):
        return self


class Base(DeclarativeBase):
    pass


class PhotoStatus(str, enum.Enum):
    ok = "ok"
    missing = "missing"  # file gone (deleted, or its drive unmounted); tags kept
    error = "error"  # could not be read/decoded; ``error`` says why


class TagSource(str, enum.Enum):
    model = "model"  # given by a model run; replaced by the next run of that model
    manual = "manual"  # added by the user; never touched by a model run
    imported = "imported"  # read from the photo's own XMP/IPTC or its sidecar
    plugin = "plugin"  # added by a plugin's tagger


class Photo(Base):
    __tablename__ = "photos"

    id: Mapped[int] = mapped_column(primary_key=True)
    path: Mapped[str] = mapped_column(FsPath, unique=True)  # absolute, resolved
    root: Mapped[str | None] = mapped_column(FsPath)  # the scanned folder it was found under
    sha256: Mapped[str | None] = mapped_column(String(64), index=True)
    size: Mapped[int | None] = mapped_column(Integer)
    mtime: Mapped[float | None] = mapped_column(Float)
    width: Mapped[int | None] = mapped_column(Integer)  # after EXIF orientation
    height: Mapped[int | None] = mapped_column(Integer)
    format: Mapped[str | None] = mapped_column(String(16))  # Pillow format name: JPEG, HEIF, PNG…

    # EXIF
    taken_at: Mapped[dt.datetime | None] = mapped_column(DateTime, index=True)  # local wall time
    taken_at_offset: Mapped[str | None] = mapped_column(String(8))  # "+02:00" when known
    camera_make: Mapped[str | None] = mapped_column(Text)
    camera_model: Mapped[str | None] = mapped_column(Text)
    lens: Mapped[str | None] = mapped_column(Text)
    iso: Mapped[int | None] = mapped_column(Integer)
    exposure_time: Mapped[float | None] = mapped_column(Float)  # seconds
    f_number: Mapped[float | None] = mapped_column(Float)
    focal_length: Mapped[float | None] = mapped_column(Float)  # mm
    gps_lat: Mapped[float | None] = mapped_column(Float)
    gps_lon: Mapped[float | None] = mapped_column(Float)
    orientation: Mapped[int | None] = mapped_column(Integer)

    status: Mapped[str] = mapped_column(String(16), default=PhotoStatus.ok.value, index=True)
    error: Mapped[str | None] = mapped_column(Text)
    added_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)
    tagged_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    tagged_run_id: Mapped[int | None] = mapped_column(ForeignKey("model_runs.id", ondelete="SET NULL"))
    # revision 0005: the photo's XMP sidecars as phototag last read or wrote them ("name:size:mtime_ns;…",
    # "" = none, NULL = never looked); a different stat on disk means another app edited them
    sidecar_stat: Mapped[str | None] = mapped_column(Text)

    tags: Mapped[list["PhotoTag"]] = relationship(
        back_populates="photo", cascade="all, delete-orphan", passive_deletes=True
    )


class Tag(Base):
    __tablename__ = "tags"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(Text, unique=True)
    name_zh: Mapped[str | None] = mapped_column(Text, index=True)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("tags.id", ondelete="SET NULL"), index=True)

    parent: Mapped["Tag | None"] = relationship(remote_side=[id])


class ModelRun(Base):
    """One use of one model version: which weights, which thresholds, when."""

    __tablename__ = "model_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    model_name: Mapped[str] = mapped_column(Text)  # registry name: builtin, ram_plus, …
    model_id: Mapped[str] = mapped_column(Text, index=True)  # architecture/vocabulary id
    weights_sha256: Mapped[str] = mapped_column(String(64))
    settings: Mapped[dict] = mapped_column(JSON, default=dict)
    started_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    photo_count: Mapped[int] = mapped_column(Integer, default=0)


class PhotoTag(Base):
    __tablename__ = "photo_tags"
    __table_args__ = (
        UniqueConstraint("photo_id", "tag_id", "source", name="uq_photo_tag_source"),
        Index("ix_photo_tags_tag_score", "tag_id", "score"),
        Index("ix_photo_tags_tag_photo", "tag_id", "photo_id"),  # revision 0003
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    photo_id: Mapped[int] = mapped_column(ForeignKey("photos.id", ondelete="CASCADE"), index=True)
    tag_id: Mapped[int] = mapped_column(ForeignKey("tags.id", ondelete="CASCADE"))
    source: Mapped[str] = mapped_column(String(16))  # TagSource
    score: Mapped[float | None] = mapped_column(Float)
    model_run_id: Mapped[int | None] = mapped_column(ForeignKey("model_runs.id", ondelete="SET NULL"), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)

    photo: Mapped[Photo] = relationship(back_populates="tags")
    tag: Mapped[Tag] = relationship()


class Caption(Base):
    __tablename__ = "captions"
    __table_args__ = (UniqueConstraint("photo_id", "model_id", name="uq_caption_photo_model"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    photo_id: Mapped[int] = mapped_column(ForeignKey("photos.id", ondelete="CASCADE"), index=True)
    model_id: Mapped[str] = mapped_column(Text)
    model_run_id: Mapped[int | None] = mapped_column(ForeignKey("model_runs.id", ondelete="SET NULL"))
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class Embedding(Base):
    """One current embedding per photo and model (float32 little-endian blob)."""

    __tablename__ = "embeddings"
    __table_args__ = (
        UniqueConstraint("photo_id", "model_id", name="uq_embedding_photo_model"),
        Index("ix_embeddings_model_created", "model_id", "created_at"),  # revision 0003
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    photo_id: Mapped[int] = mapped_column(ForeignKey("photos.id", ondelete="CASCADE"), index=True)
    model_id: Mapped[str] = mapped_column(Text, index=True)
    model_run_id: Mapped[int | None] = mapped_column(ForeignKey("model_runs.id", ondelete="SET NULL"))
    dim: Mapped[int] = mapped_column(Integer)
    vector: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


# ---- revision 0002: the daemon's work queue, corrections and export state ----------------------


class WorkItem(Base):
    """A photo waiting for the model. Done in the same transaction that stores its tags."""

    __tablename__ = "work_queue"

    id: Mapped[int] = mapped_column(primary_key=True)
    path: Mapped[str] = mapped_column(FsPath, unique=True)
    reason: Mapped[str] = mapped_column(String(16), default="new")  # new | changed | retag
    model_name: Mapped[str | None] = mapped_column(Text)  # None = the default model
    priority: Mapped[int] = mapped_column(Integer, default=0)  # higher first; retag < new
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    enqueued_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    # revision 0004: who works on the row (crash-safe cross-process claims), and crash evidence
    owner: Mapped[str | None] = mapped_column(Text)  # "host:pid:start" of the claiming process
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(DateTime)  # the owner was alive then
    failures: Mapped[int] = mapped_column(Integer, default=0)  # failed while alone in flight
    set_aside_for: Mapped[str | None] = mapped_column(Text)  # "version|model_id|weights" it failed for


class TagRemoval(Base):
    """The user removed this tag from this photo: model runs must not give it back."""

    __tablename__ = "tag_removals"
    __table_args__ = (UniqueConstraint("photo_id", "tag_id", name="uq_tag_removal"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    photo_id: Mapped[int] = mapped_column(ForeignKey("photos.id", ondelete="CASCADE"), index=True)
    tag_id: Mapped[int] = mapped_column(ForeignKey("tags.id", ondelete="CASCADE"))
    score: Mapped[float | None] = mapped_column(Float)  # the model's score when it was removed
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class ExportState(Base):
    """What an exporter last wrote for a photo, so unchanged photos are skipped."""

    __tablename__ = "export_state"
    __table_args__ = (UniqueConstraint("photo_id", "exporter", name="uq_export_photo_exporter"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    photo_id: Mapped[int] = mapped_column(ForeignKey("photos.id", ondelete="CASCADE"), index=True)
    exporter: Mapped[str] = mapped_column(Text)
    content_hash: Mapped[str] = mapped_column(String(64))  # hash of what was written
    target: Mapped[str | None] = mapped_column(FsPath)  # sidecar path / database written
    exported_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
