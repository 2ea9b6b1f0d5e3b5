"""Decoding real camera and phone files (and files that are not photos)."""

import shutil

import pytest
from PIL import Image

from conftest import TEST_PHOTOS
from phototag.ingest.decode import DecodeError, decode_photo



@pytest.mark.parametrize("n", range(2, 9))
def test_orientation_is_applied(n):
    """All hopper_orientation_N files show the same upright picture after decoding."""
    from PIL import ImageOps

    # orientation 2 is a mirror: undo it to get the upright reference
    reference = ImageOps.mirror(Image.open(TEST_PHOTOS / "orientation" / "hopper_orientation_2.jpg").convert("RGB"))
    img = decode_photo(TEST_PHOTOS / "orientation" / f"hopper_orientation_{n}.jpg").image
    assert img.size == reference.size
    diff = sum(abs(a - b) for a, b in zip(img.resize((16, 16)).tobytes(), reference.resize((16, 16)).tobytes()))
    assert diff / (16 * 16 * 3) < 12


def test_heic_decodes_with_full_size():
    photo = decode_photo(TEST_PHOTOS / "heic" / "pug.heic")
    assert (photo.width, photo.height, photo.format) == (4032, 3024, "HEIF")
    assert photo.image.mode == "RGB"


def test_big_jpeg_uses_draft_mode_but_reports_full_size():
    photo = decode_photo(TEST_PHOTOS / "jpeg" / "xmp_test.jpg", min_side=256)
    assert (photo.width, photo.height) == (2000, 1072)
    assert min(photo.image.size) < 1072


@pytest.mark.parametrize(
    "maker, message",
    [
        (lambda p: p.write_bytes(b""), "empty file"),
        (lambda p: p.write_text("not a photo"), "not an image"),
        (lambda p: shutil.copy(TEST_PHOTOS / "broken" / "corrupted.heic", p), "not an image"),
    ],
)
def test_bad_files_raise_readable_errors(tmp_path, maker, message):
    path = tmp_path / "bad.jpg"
    maker(path)
    with pytest.raises(DecodeError, match=message):
        decode_photo(path)


def test_truncated_jpeg_is_an_error(tmp_path):
    data = (TEST_PHOTOS / "jpeg" / "flower.jpg").read_bytes()
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(DecodeError, match="damaged or truncated"):
        decode_photo(path)


def test_decompression_bomb_is_refused(tmp_path):
    path = tmp_path / "bomb.png"
    Image.new("L", (20000, 20000)).save(path, optimize=True)
    with pytest.raises(DecodeError, match="decompression bomb"):
        decode_photo(path, max_pixels=100_000_000)


def test_raw_dng_decodes(tmp_path):
    """A real DNG built from a real photo (pidng), read back with rawpy (no embedded preview path)."""
    import numpy as np
    from pidng.core import RAW2DNG, DNGTags, Tag

    from skimage import data

    rgb = data.astronaut()[:256, :256]
    bayer = np.zeros((256, 256), dtype=np.uint16)
    bayer[0::2, 0::2] = rgb[0::2, 0::2, 0]
    bayer[0::2, 1::2] = rgb[0::2, 1::2, 1]
    bayer[1::2, 0::2] = rgb[1::2, 0::2, 1]
    bayer[1::2, 1::2] = rgb[1::2, 1::2, 2]
    bayer <<= 4
    tags = DNGTags()
    tags.set(Tag.ImageWidth, 256)
    tags.set(Tag.ImageLength, 256)
    tags.set(Tag.TileWidth, 256)
    tags.set(Tag.TileLength, 256)
    tags.set(Tag.Orientation, 1)
    tags.set(Tag.PhotometricInterpretation, 32803)
    tags.set(Tag.SamplesPerPixel, 1)
    tags.set(Tag.BitsPerSample, 12)
    tags.set(Tag.CFARepeatPatternDim, [2, 2])
    tags.set(Tag.CFAPattern, [0, 1, 1, 2])
    tags.set(Tag.BlackLevel, 0)
    tags.set(Tag.WhiteLevel, 4095)
    tags.set(Tag.ColorMatrix1, [[1, 1], [0, 1], [0, 1], [0, 1], [1, 1], [0, 1], [0, 1], [0, 1], [1, 1]])
    tags.set(Tag.CalibrationIlluminant1, 21)
    tags.set(Tag.AsShotNeutral, [[1, 1], [1, 1], [1, 1]])
    tags.set(Tag.DNGVersion, [1, 4, 0, 0])
    tags.set(Tag.DNGBackwardVersion, [1, 2, 0, 0])
    tags.set(Tag.Make, "phototag")
    tags.set(Tag.Model, "test")
    tags.set(Tag.PreviewColorSpace, 2)
    converter = RAW2DNG()
    converter.options(tags, path=str(tmp_path), compress=False)
    converter.convert(bayer, filename="shot")
    dng = tmp_path / "shot.dng"
    photo = decode_photo(dng)
    assert photo.format == "RAW"
    assert photo.image.mode == "RGB" and min(photo.image.size) >= 64
