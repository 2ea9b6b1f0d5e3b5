"""The library schema (SQLAlchemy 2 typed ORM).

SQLite is the source of truth: FAISS indexes, sidecars and other apps' databases are outputs
rebuilt from these tables. Schema changes go through Alembic (``migrations/``); this module must
always describe the head revision (a test compares the two).
"""

from __future__ import annotations

import datetime as dt
import enum

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
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


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
    path: Mapped[str] = mapped_column(Text, unique=True)  # absolute, resolved
    root: Mapped[str | None] = mapped_column(Text)  # the scanned folder it was found under
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
    path: Mapped[str] = mapped_column(Text, unique=True)
    reason: Mapped[str] = mapped_column(String(16), default="new")  # new | changed | retag
    model_name: Mapped[str | None] = mapped_column(Text)  # None = the default model
    priority: Mapped[int] = mapped_column(Integer, default=0)  # higher first; retag < new
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    enqueued_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


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
    target: Mapped[str | None] = mapped_column(Text)  # sidecar path / database written
    exported_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
