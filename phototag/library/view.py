"""What the library shows: the JSON shape of ``phototag show`` (and the base of search results)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session

from phototag.db.models import (
    Caption,
    Photo,
)
from phototag.library.core import Library


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


def search_result_as_dict(lib: Library, session: Session, photos: list[Photo]) -> list[dict]:
    """What ``phototag search --format json`` prints (and ``/api/search`` answers): each photo's path,
    id, taken_at and tags (name, score, source), in the order given."""
    tags = lib.photos_tags(session, (p.id for p in photos))
    return [
        {"path": p.path, "id": p.id, "taken_at": p.taken_at.isoformat() if p.taken_at else None,
         "tags": [{"name": t["name"], "score": t["score"], "source": t["source"]} for t in tags[p.id]]}
        for p in photos
    ]

