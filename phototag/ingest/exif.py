"""EXIF metadata: when, with what camera and lens, how exposed, where.

Read with Exiv2 (python-exiv2, the library digiKam uses; already phototag's XMP reader), which reads
every field phototag stores from JPEG, TIFF, WebP, PNG, HEIF/AVIF and RAW files — also where
exifread gives up (``heic/L_exif_xmp_iptc.heic``: exifread raises AssertionError). A file Exiv2
refuses, or in which it finds no EXIF at all, is read again with exifread, so no photo loses a
field either reader can give (``tests/ingest/test_exif.py`` compares the two on every test photo).
"""

from __future__ import annotations

import datetime as dt
import logging
import mmap
import os
import re
import threading
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger(__name__)
# exifread logs a warning for every file without EXIF (each PNG, say), Exiv2 one for every camera's
# quirky maker notes: neither is news for a photo library
logging.getLogger("exifread").setLevel(logging.ERROR)
logging.getLogger("exiv2").setLevel(logging.ERROR)


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

    def is_empty(self) -> bool:
        return all(getattr(self, f.name) is None for f in fields(self))


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


def _clean(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip().strip("\x00").strip()
    return text or None


def _degrees(parts: list[float | None], ref: str | None, limit: int) -> float | None:
    """Degrees, minutes, seconds (+ N/S/E/W) → signed decimal degrees; None when out of range."""
    if len(parts) < 3 or any(p is None for p in parts[:3]):
        return None
    value = parts[0] + parts[1] / 60 + parts[2] / 3600
    if (ref or "").upper().startswith(("S", "W")):
        value = -value
    if not -limit <= value <= limit:
        return None
    return round(value, 7)


def read_exif(path: Path | str) -> ExifData:
    """Read EXIF from a photo file. Missing or malformed EXIF gives empty fields, never an error."""
    try:
        data = _read_exiv2(Path(path))
    except Exception as exc:  # Exiv2Error (corrupt, unknown format), OSError: exifread may still read it
        log.debug("exiv2 cannot read EXIF of %s: %s", path, exc)
        data = None
    if data is not None and not data.is_empty():
        return data
    return _read_exifread(path)


# ---- Exiv2 ------------------------------------------------------------------------------------

_exiv2_lock = threading.Lock()
_exiv2_ready = False


def _exiv2():
    """Import exiv2 once; its XMP toolkit is initialised before any thread parses a packet (a HEIC's
    XMP is parsed while its EXIF is read; the toolkit's set-up is not thread-safe)."""
    global _exiv2_ready
    import exiv2

    if not _exiv2_ready:
        with _exiv2_lock:
            if not _exiv2_ready:
                exiv2.XmpParser.initialize()
                _exiv2_ready = True
    return exiv2


def _with_exiv2_image(path: Path, read: Callable[[Any], ExifData]) -> ExifData:
    """``read(image)`` on Exiv2's image of ``path``, its metadata read, for any file name: Exiv2
    takes a name as UTF-8 text, so a name that is not valid UTF-8 is read from a memory map of the
    file instead (the image is gone before the map closes)."""
    exiv2 = _exiv2()
    name = os.fspath(path)
    try:
        plain = name.encode("utf-8") == os.fsencode(name)
    except UnicodeEncodeError:  # lone surrogates: bytes os.fsdecode could not decode
        plain = False
    if plain:
        image = exiv2.ImageFactory.open(name)
        image.readMetadata()
        return read(image)
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as view:
        image = exiv2.ImageFactory.open(view)
        try:
            image.readMetadata()
            return read(image)
        finally:
            del image


def _exiv2_values(datum: Any) -> list[float | None]:
    """A number datum's components as floats, read from their text (``4294967295/1``: an unsigned
    rational read as a signed one would turn negative); None for a zero denominator or no number."""
    values: list[float | None] = []
    for i in range(datum.count()):
        num, _, den = datum.toString(i).partition("/")
        try:
            values.append(float(num) if not den else (None if int(den) == 0 else int(num) / int(den)))
        except ValueError:
            values.append(None)
    return values


def _read_exiv2(path: Path) -> ExifData:
    return _with_exiv2_image(path, _exif_of)


def _exif_of(image: Any) -> ExifData:
    data = ExifData()
    found: dict[str, Any] = {}
    lens_in_maker_note: str | None = None
    for datum in image.exifData():
        key = datum.key()
        if key in _EXIV2_KEYS:
            found[key] = datum
        elif lens_in_maker_note is None and key.endswith(".LensModel"):
            lens_in_maker_note = _clean(datum.toString())

    def text(key: str) -> str | None:
        datum = found.get(key)
        return None if datum is None else _clean(datum.toString())

    def first(key: str) -> float | None:
        datum = found.get(key)
        if datum is None or datum.count() < 1:
            return None
        return _exiv2_values(datum)[0]

    data.taken_at = parse_exif_datetime(
        text("Exif.Photo.DateTimeOriginal") or text("Exif.Photo.DateTimeDigitized") or text("Exif.Image.DateTime")
    )
    offset = text("Exif.Photo.OffsetTimeOriginal") or text("Exif.Photo.OffsetTime")
    if offset and _OFFSET.match(offset):
        data.taken_at_offset = offset
    data.camera_make = text("Exif.Image.Make")
    data.camera_model = text("Exif.Image.Model")
    data.lens = text("Exif.Photo.LensModel") or lens_in_maker_note
    iso = first("Exif.Photo.ISOSpeedRatings")
    if iso is not None and iso > 0 and iso == int(iso):
        data.iso = int(iso)
    data.exposure_time = first("Exif.Photo.ExposureTime")
    data.f_number = first("Exif.Photo.FNumber")
    data.focal_length = first("Exif.Photo.FocalLength")
    for name, coord, limit in (("gps_lat", "Latitude", 90), ("gps_lon", "Longitude", 180)):
        datum = found.get(f"Exif.GPSInfo.GPS{coord}")
        if datum is not None:
            setattr(data, name, _degrees(_exiv2_values(datum), text(f"Exif.GPSInfo.GPS{coord}Ref"), limit))
    orientation = first("Exif.Image.Orientation")
    if orientation is not None and orientation == int(orientation) and 1 <= orientation <= 8:
        data.orientation = int(orientation)
    return data


_EXIV2_KEYS = frozenset({
    "Exif.Photo.DateTimeOriginal", "Exif.Photo.DateTimeDigitized", "Exif.Image.DateTime",
    "Exif.Photo.OffsetTimeOriginal", "Exif.Photo.OffsetTime", "Exif.Image.Make", "Exif.Image.Model",
    "Exif.Photo.LensModel", "Exif.Photo.ISOSpeedRatings", "Exif.Photo.ExposureTime", "Exif.Photo.FNumber",
    "Exif.Photo.FocalLength", "Exif.GPSInfo.GPSLatitude", "Exif.GPSInfo.GPSLatitudeRef",
    "Exif.GPSInfo.GPSLongitude", "Exif.GPSInfo.GPSLongitudeRef", "Exif.Image.Orientation",
})


# ---- exifread: the fallback ---------------------------------------------------------------------


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
    return _clean(tag.printable if hasattr(tag, "printable") else tag)


def _gps(tags: dict, coord: str, ref_name: str) -> float | None:
    tag = tags.get(f"GPS {coord}")
    if tag is None or not isinstance(tag.values, (list, tuple)) or len(tag.values) < 3:
        return None
    limit = 90 if coord == "GPSLatitude" else 180
    return _degrees([_ratio(v) for v in tag.values[:3]], _text(tags.get(f"GPS {ref_name}")), limit)


def _read_exifread(path: Path | str) -> ExifData:
    import exifread

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
