"""Decoding photos into RGB Pillow images, EXIF orientation applied.

* JPEG: draft mode (DCT scaling) so a 24 MP photo decodes at about the size the model needs.
* HEIC/HEIF/AVIF: pillow-heif.
* RAW (DNG, CR2, NEF, …): the embedded JPEG preview via rawpy; a half-size demosaic only when the
  file has no usable preview.
* Decompression bombs are refused (``max_pixels``, the ``scan.max_pixels`` setting), not decoded.
  Pillow's own guard (``Image.MAX_IMAGE_PIXELS``, 89.5 MP by default) would refuse valid photos
  below our limit, so it is raised to the largest limit a decode asked for (never lowered, never
  disabled): each decode then applies its own ``max_pixels`` to the size in the file's header,
  before a single pixel is decoded.
* A HEIF/AVIF file whose boxes run past the end of the file (an interrupted copy or download) is
  refused: libheif would otherwise give its small, complete thumbnail-like image as the photo.
"""

from __future__ import annotations

import io
import struct
import threading
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from phototag.errors import PhototagError

try:
    import pillow_heif

    pillow_heif.register_heif_opener()
except ImportError:  # pragma: no cover - pillow-heif is a dependency
    pillow_heif = None

RAW_EXTENSIONS = {".dng", ".cr2", ".cr3", ".nef", ".arw", ".orf", ".rw2", ".raf", ".pef", ".srw"}
DEFAULT_MAX_PIXELS = 300_000_000


class DecodeError(PhototagError):
    """The file is not a photo we can read; the message says why in plain words."""


def read_error(exc: BaseException) -> str:
    """What a scan records for a photo whose reading raised ``exc`` (one wording, wherever the photo
    was read: the local decode pool or a Ray worker)."""
    if isinstance(exc, DecodeError):
        return str(exc)
    if isinstance(exc, FileNotFoundError):
        return "file vanished while it was being read"
    if isinstance(exc, PermissionError):
        return "permission denied"
    return f"unexpected error: {type(exc).__name__}: {exc}"


_pillow_limit_lock = threading.Lock()


def _allow_pixels(max_pixels: int) -> None:
    """Make Pillow's decompression-bomb guard no stricter than ``max_pixels``.

    Pillow reads the module-wide ``Image.MAX_IMAGE_PIXELS`` in ``Image.open`` (a warning above it,
    an error above twice it). Decode threads with different limits may run at once, so the value
    is only ever raised, under a lock, to the largest limit asked for; the caller then refuses
    anything above its own limit itself (:func:`_check_pixels`). Pillow's error, at twice the
    largest limit, stays as a backstop; a guard switched off (``None``) is left as it is."""
    current = Image.MAX_IMAGE_PIXELS
    if current is None or current >= max_pixels:
        return
    with _pillow_limit_lock:
        if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < max_pixels:
            Image.MAX_IMAGE_PIXELS = max_pixels


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise DecodeError(
            f"image too large ({width}×{height} pixels = {width * height / 1e6:.1f} MP, more than "
            f"scan.max_pixels = {max_pixels / 1e6:g} MP): refused as a decompression bomb"
        )


def _check_isobmff_complete(path: Path, size: int) -> None:
    """Refuse a HEIF/AVIF (ISO base media) file whose top-level boxes run past its end.

    A truncated HEIC still opens: libheif decodes whichever image is complete (in a cut iPhone
    file, a tiny one), so the photo would be tagged from that. Walking the box headers is cheap
    (a few reads) and catches every cut that shortens the file."""
    try:
        with open(path, "rb") as fh:
            offset = 0
            while size - offset >= 8:
                fh.seek(offset)
                box_size, box_type = struct.unpack(">I4s", fh.read(8))
                if not all(0x20 <= c <= 0x7E for c in box_type):
                    return  # not a box: a trailer some cameras append after the last box
                if box_size == 1:  # 64-bit size follows the type
                    extended = fh.read(8)
                    if len(extended) < 8:
                        raise DecodeError("truncated file: it ends inside a box header")
                    box_size = struct.unpack(">Q", extended)[0]
                    header = 16
                elif box_size == 0:  # the last box: it runs to the end of the file
                    return
                else:
                    header = 8
                if box_size < header:
                    raise DecodeError(f"damaged file: a box at byte {offset} has an impossible size ({box_size})")
                if offset + box_size > size:
                    name = box_type.decode("latin-1", "replace")
                    raise DecodeError(
                        f"truncated file: its '{name}' box ends at byte {offset + box_size}, "
                        f"but the file has only {size} bytes"
                    )
                offset += box_size
    except OSError as exc:
        raise DecodeError(f"cannot read: {exc.strerror or exc}") from exc


@dataclass
class DecodedPhoto:
    image: Image.Image  # RGB, orientation applied, possibly reduced (draft) for speed
    width: int  # full size after orientation (not the reduced size)
    height: int
    format: str


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        img = img.point(lambda v: v / 256).convert("L")
    return img.convert("RGB")


def _decode_raw(path: Path, min_side: int, max_pixels: int) -> DecodedPhoto:
    try:
        import rawpy
    except ImportError as exc:  # pragma: no cover
        raise DecodeError("RAW files need the 'rawpy' package") from exc
    try:
        with rawpy.imread(str(path)) as raw:
            try:
                thumb = raw.extract_thumb()
            except (rawpy.LibRawNoThumbnailError, rawpy.LibRawUnsupportedThumbnailError):
                thumb = None
            if thumb is not None and thumb.format == rawpy.ThumbFormat.JPEG:
                _allow_pixels(max_pixels)
                img = Image.open(io.BytesIO(thumb.data))
                _check_pixels(*img.size, max_pixels)
                img.load()
                img = ImageOps.exif_transpose(img)
            elif thumb is not None and thumb.format == rawpy.ThumbFormat.BITMAP:
                img = Image.fromarray(thumb.data)
            else:
                sizes = raw.sizes
                _check_pixels(sizes.width, sizes.height, max_pixels)
                rgb = raw.postprocess(half_size=True, use_camera_wb=True, output_bps=8)
                img = Image.fromarray(rgb)
    except DecodeError:
        raise
    except Exception as exc:
        raise DecodeError(f"cannot read RAW file: {exc}") from exc
    img = _to_rgb(img)
    return DecodedPhoto(img, img.width, img.height, "RAW")


def decode_photo(path: Path | str, min_side: int = 448, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedPhoto:
    """Open ``path`` as an RGB image with EXIF orientation applied.

    ``min_side``: JPEG draft mode keeps at least this many pixels on the short side.
    Raises :class:`DecodeError` with a readable reason for anything that is not a usable photo."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError as exc:
        raise DecodeError("file vanished before it could be read") from exc
    except PermissionError as exc:
        raise DecodeError("permission denied") from exc
    if size == 0:
        raise DecodeError("empty file (0 bytes)")
    if path.suffix.lower() in RAW_EXTENSIONS:
        return _decode_raw(path, min_side, max_pixels)
    _allow_pixels(max_pixels)
    try:
        img = Image.open(path)
        try:
            full_w, full_h = img.size
            _check_pixels(full_w, full_h, max_pixels)
            fmt = img.format or path.suffix.lstrip(".").upper()
            if img.format in ("HEIF", "AVIF"):
                _check_isobmff_complete(path, size)
            if img.format == "JPEG":
                short = min(full_w, full_h)
                if short > 2 * min_side:
                    scale = short / min_side
                    img.draft("RGB", (int(full_w / scale), int(full_h / scale)))
            if getattr(img, "n_frames", 1) > 1:
                img.seek(0)
            img.load()
        except BaseException:
            img.close()  # refused before (or while) decoding: do not leave the file open
            raise
    except DecodeError:
        raise
    except Image.DecompressionBombError as exc:
        raise DecodeError(f"refused as a decompression bomb: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise DecodeError("not an image file (or a format phototag cannot read)") from exc
    except FileNotFoundError as exc:
        raise DecodeError("file vanished while it was being read") from exc
    except PermissionError as exc:
        raise DecodeError("permission denied") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise DecodeError(f"damaged or truncated image: {exc}") from exc
    except Exception as exc:  # pillow-heif raises RuntimeError etc. on broken files
        raise DecodeError(f"cannot decode: {exc}") from exc
    try:
        oriented = ImageOps.exif_transpose(img)
    except Exception:  # broken EXIF must not lose the photo
        oriented = img
    if oriented.size != img.size:  # rotated by 90/270
        full_w, full_h = full_h, full_w
    return DecodedPhoto(_to_rgb(oriented), full_w, full_h, fmt)
