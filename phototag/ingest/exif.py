"""EXIF metadata with exifread: when, with what camera and lens, how exposed, where."""

from __future__ import annotations

import datetime as dt
import logging
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import exifread

log = logging.getLogger(__name__)
# exifread logs a warning for every file without EXIF (each PNG, say): not news for a photo library
logging.getLogger("exifread").setLevel(logging.ERROR)


@dataclass
class ExifData:
    taken_at: dt.datetime | None = None
    taken_at_offset: str | None = None
    camera_make: str | None = None
    camera_model: str | None = None
    lens: str | None = None
    iso: int | None = None
    exposure_time: float | None = None
    f_number: float | None = None
    focal_length: float | None = None
    gps_lat: float | None = None
    gps_lon: float | None = None
    orientation: int | None = None

    def as_columns(self) -> dict[str, Any]:
        return asdict(self)


def _ratio(value: Any) -> float | None:
    try:
        num, den = value.num, value.den
        return None if den == 0 else num / den
    except AttributeError:
        try:
            return float(value)
        except (TypeError, ValueError):
            return None


def _first(tag: Any) -> Any:
    if tag is None:
        return None
    values = getattr(tag, "values", None)
    if isinstance(values, (list, tuple)):
        return values[0] if values else None
    return values


def _text(tag: Any) -> str | None:
    if tag is None:
        return None
    value = str(tag.printable if hasattr(tag, "printable") else tag).strip().strip("\x00").strip()
    return value or None


_DATE = re.compile(r"(\d{4})[:\-](\d{2})[:\-](\d{2})[ T](\d{2}):(\d{2}):(\d{2})")
_OFFSET = re.compile(r"^[+-]\d{2}:\d{2}$")


def parse_exif_datetime(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    match = _DATE.search(text)
    if not match:
        return None
    try:
        return dt.datetime(*(int(g) for g in match.groups()))
    except ValueError:  # 0000:00:00 00:00:00 and friends
        return None


def _gps(tags: dict, coord: str, ref_name: str) -> float | None:
    tag = tags.get(f"GPS {coord}")
    if tag is None or not isinstance(tag.values, (list, tuple)) or len(tag.values) < 3:
        return None
    parts = [_ratio(v) for v in tag.values[:3]]
    if any(p is None for p in parts):
        return None
    value = parts[0] + parts[1] / 60 + parts[2] / 3600
    ref = _text(tags.get(f"GPS {ref_name}")) or ""
    if ref.upper().startswith(("S", "W")):
        value = -value
    limit = 90 if coord == "GPSLatitude" else 180
    if not -limit <= value <= limit:
        return None
    return round(value, 7)


def read_exif(path: Path | str) -> ExifData:
    """Read EXIF from a photo file. Missing or malformed EXIF gives empty fields, never an error."""
    data = ExifData()
    try:
        with open(path, "rb") as fh:
            tags = exifread.process_file(fh, details=False, extract_thumbnail=False)
    except Exception as exc:  # exifread raises many kinds of errors on odd files
        log.debug("no EXIF in %s: %s", path, exc)
        return data
    if not tags:
        return data
    data.taken_at = parse_exif_datetime(
        _text(tags.get("EXIF DateTimeOriginal"))
        or _text(tags.get("EXIF DateTimeDigitized"))
        or _text(tags.get("Image DateTime"))
    )
    offset = _text(tags.get("EXIF OffsetTimeOriginal")) or _text(tags.get("EXIF OffsetTime"))
    if offset and _OFFSET.match(offset):
        data.taken_at_offset = offset
    data.camera_make = _text(tags.get("Image Make"))
    data.camera_model = _text(tags.get("Image Model"))
    data.lens = _text(tags.get("EXIF LensModel")) or _text(tags.get("MakerNote LensModel"))
    iso = _first(tags.get("EXIF ISOSpeedRatings")) or _first(tags.get("EXIF PhotographicSensitivity"))
    if isinstance(iso, int) and iso > 0:
        data.iso = iso
    data.exposure_time = _ratio(_first(tags.get("EXIF ExposureTime")))
    data.f_number = _ratio(_first(tags.get("EXIF FNumber")))
    data.focal_length = _ratio(_first(tags.get("EXIF FocalLength")))
    data.gps_lat = _gps(tags, "GPSLatitude", "GPSLatitudeRef")
    data.gps_lon = _gps(tags, "GPSLongitude", "GPSLongitudeRef")
    orientation = _first(tags.get("Image Orientation"))
    if isinstance(orientation, int) and 1 <= orientation <= 8:
        data.orientation = orientation
    return data
