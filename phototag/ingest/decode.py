"""Decoding photos into RGB Pillow images, EXIF orientation applied.

* JPEG: draft mode (DCT scaling) so a 24 MP photo decodes at about the size the model needs.
* HEIC/HEIF/AVIF: pillow-heif.
* RAW (DNG, CR2, NEF, …): the embedded JPEG preview via rawpy; a half-size demosaic only when the
  file has no usable preview.
* Decompression bombs are refused (``max_pixels``), not decoded.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

try:
    import pillow_heif

    pillow_heif.register_heif_opener()
except ImportError:  # pragma: no cover - pillow-heif is a dependency
    pillow_heif = None

RAW_EXTENSIONS = {".dng", ".cr2", ".cr3", ".nef", ".arw", ".orf", ".rw2", ".raf", ".pef", ".srw"}
DEFAULT_MAX_PIXELS = 300_000_000


class DecodeError(Exception):
    """The file is not a photo we can read; the message says why in plain words."""


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


def _decode_raw(path: Path, min_side: int) -> DecodedPhoto:
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
                img = Image.open(io.BytesIO(thumb.data))
                img.load()
                img = ImageOps.exif_transpose(img)
            elif thumb is not None and thumb.format == rawpy.ThumbFormat.BITMAP:
                img = Image.fromarray(thumb.data)
            else:
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
        return _decode_raw(path, min_side)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(path)
            full_w, full_h = img.size
            if full_w * full_h > max_pixels:
                raise DecodeError(f"image too large ({full_w}×{full_h} pixels): refused as a decompression bomb")
            fmt = img.format or path.suffix.lstrip(".").upper()
            if img.format == "JPEG":
                short = min(full_w, full_h)
                if short > 2 * min_side:
                    scale = short / min_side
                    img.draft("RGB", (int(full_w / scale), int(full_h / scale)))
            if getattr(img, "n_frames", 1) > 1:
                img.seek(0)
            img.load()
    except DecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
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
