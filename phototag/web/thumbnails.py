"""Thumbnails of library photos, cached as JPEG files in the library home.

A thumbnail is a derived, rebuildable file (like the FAISS index): deleting ``<home>/thumbnails/``
loses nothing. One photo's thumbnail of one size lives at::

    <home>/thumbnails/<id % 256 as 2 hex digits>/<photo id>-<size>-<key>.jpg

where ``key`` is a hash of what the picture depends on: the photo row's content hash, file size and
mtime, the size and this module's :data:`THUMBNAIL_FORMAT`. A photo that changes on disk (a rescan
updates its row) therefore gets a new name, and the old file is removed when the new one is made.
The file is found from the photo's *row* (its id and stored path), never from anything a request
sends.

Generation decodes through :func:`phototag.ingest.decode.decode_photo` (JPEG draft mode: a 12 MP
JPEG is decoded at 1/8 scale; HEIC through pillow-heif; RAW through its embedded preview; EXIF
orientation applied) and writes through :mod:`phototag.atomic`, so a reader never sees half a file.
Two requests for the same missing thumbnail in one process make it once (a lock per file); two
processes may both make it, and the rename makes that harmless.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from PIL import Image

from phototag import atomic
from phototag.errors import PhototagError

#: bump when the way thumbnails are made changes (quality, resampling): every cached one is remade
THUMBNAIL_FORMAT = 1
JPEG_QUALITY = 82
MIN_SIZE, MAX_SIZE = 32, 4096
FOLDER = "thumbnails"


class ThumbnailError(PhototagError):
    """No thumbnail can be made for this photo (the file is gone or not readable); says why."""


class PhotoRow(Protocol):
    """What a thumbnail needs of a photo: a :class:`phototag.db.models.Photo` row has it."""

    id: int
    path: str
    sha256: str | None
    size: int | None
    mtime: float | None


def thumbnail_size(settings) -> int:
    """The ``serve.thumbnail_size`` setting (longest side in pixels)."""
    return int(settings.get("serve.thumbnail_size") or 360)


def thumbnail_key(photo: PhotoRow, size: int) -> str:
    """16 hex digits that change whenever the photo's content, file size or mtime (or ``size``) do."""
    blob = f"{THUMBNAIL_FORMAT}|{photo.sha256}|{photo.size}|{photo.mtime!r}|{size}"
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def thumbnail_folder(home: Path, photo_id: int) -> Path:
    return Path(home) / FOLDER / f"{int(photo_id) % 256:02x}"


def cached_path(home: Path, photo: PhotoRow, size: int) -> Path:
    """Where the thumbnail of ``photo`` at ``size`` is (or will be) cached; nothing is made."""
    return thumbnail_folder(home, photo.id) / f"{int(photo.id)}-{int(size)}-{thumbnail_key(photo, size)}.jpg"


_locks_guard = threading.Lock()
_locks: dict[Path, threading.Lock] = {}


@contextlib.contextmanager
def _making(path: Path):
    """One maker per thumbnail file in this process; the lock is dropped once nobody waits on it."""
    with _locks_guard:
        lock = _locks.setdefault(path, threading.Lock())
    with lock:
        yield
    with _locks_guard:
        if not lock.locked() and _locks.get(path) is lock:
            del _locks[path]


def thumbnail_path(library, photo: PhotoRow, size: int | None = None) -> Path:
    """The cached JPEG thumbnail of ``photo`` (longest side ``size`` pixels, default the
    ``serve.thumbnail_size`` setting), made now if it is not cached yet.

    Raises :class:`ThumbnailError` when the photo cannot be read (gone, damaged, refused)."""
    settings = library.settings
    size = thumbnail_size(settings) if size is None else int(size)
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise ThumbnailError(f"thumbnail size {size} is outside {MIN_SIZE}..{MAX_SIZE}")
    path = cached_path(settings.home, photo, size)
    if _usable(path):
        return path
    with _making(path):
        if _usable(path):  # another thread made it while this one waited
            return path
        image = _render(photo.path, size, int(settings.get("scan.max_pixels") or 0) or None)
        # a cache: no fsync (about 15 ms a thumbnail on a busy disk); a file a power cut left empty
        # is made again (_usable)
        with atomic.replacing(path, durable=False) as tmp:
            image.save(tmp, "JPEG", quality=JPEG_QUALITY)
        _remove_stale(settings.home, photo, keep=path)
    return path


def _usable(path: Path) -> bool:
    try:
        return path.stat().st_size > 0
    except OSError:
        return False


def _render(source: str, size: int, max_pixels: int | None) -> Image.Image:
    from phototag.ingest.decode import DecodeError, decode_photo

    kwargs = {"max_pixels": max_pixels} if max_pixels else {}
    try:
        # min_side = size: the draft keeps at least `size` pixels on the short side, so the long side
        # still has the `size` pixels the thumbnail needs (draft picks a DCT scale of 1/2, 1/4 or 1/8)
        decoded = decode_photo(source, min_side=size, **kwargs)
    except DecodeError as exc:
        raise ThumbnailError(f"{source}: {exc}") from exc
    image = decoded.image
    image.thumbnail((size, size), Image.Resampling.BICUBIC, reducing_gap=2.0)
    return image


def _remove_stale(home: Path, photo: PhotoRow, keep: Path) -> None:
    """Remove the photo's other cached thumbnails whose key is not its current one (any size)."""
    folder = keep.parent
    prefix = f"{int(photo.id)}-"
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        name = entry.name
        if not name.startswith(prefix) or not name.endswith(".jpg") or entry.path == str(keep):
            continue
        parts = name[:-4].split("-")
        if len(parts) != 3 or not parts[1].isdigit():
            continue
        if parts[2] != thumbnail_key(photo, int(parts[1])):
            with contextlib.suppress(OSError):
                os.unlink(entry.path)


def pregenerate(library, photo_ids: Iterable[int], size: int | None = None) -> tuple[int, list[str]]:
    """Make the thumbnails of ``photo_ids`` now (e.g. after a scan's batch is committed), so that
    ``serve`` shows them without a wait. Returns (how many were made or already cached, errors)."""
    from sqlalchemy import select

    from phototag.db.models import Photo, PhotoStatus

    ids = list(photo_ids)
    made, errors = 0, []
    for start in range(0, len(ids), 500):
        with library.session() as session:
            photos = session.scalars(select(Photo).where(Photo.id.in_(ids[start:start + 500]),
                                                         Photo.status == PhotoStatus.ok.value)).all()
        for photo in photos:
            try:
                thumbnail_path(library, photo, size)
                made += 1
            except ThumbnailError as exc:
                errors.append(str(exc))
    return made, errors
