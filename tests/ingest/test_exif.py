"""EXIF on real camera and phone files: Exiv2 reads it, exifread where Exiv2 cannot."""

import dataclasses
import datetime as dt
import os
import shutil
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import TEST_PHOTOS
from phototag.ingest import exif as exif_module
from phototag.ingest.exif import read_exif

ALL_PHOTOS = sorted(p for p in TEST_PHOTOS.rglob("*") if p.is_file() and p.suffix != ".md")
#: fields Exiv2 reads that exifread does not (its maker-note lens; everything of a HEIC exifread crashes on)
EXIV2_ONLY = {
    "L_exif_xmp_iptc.heic": {"taken_at", "taken_at_offset", "camera_make", "camera_model", "lens", "iso",
                             "exposure_time", "f_number", "focal_length"},
    "r_pen.jpg": {"lens"},
}


def test_exif_from_iphone_heic_with_gps_and_offset():
    exif = read_exif(TEST_PHOTOS / "heic" / "pug.heic")
    assert exif.taken_at == dt.datetime(2023, 2, 21, 14, 33, 8)
    assert exif.taken_at_offset == "+03:00"
    assert (exif.camera_make, exif.camera_model) == ("Apple", "iPhone 13 Pro")
    assert exif.lens.startswith("iPhone 13 Pro back")
    assert exif.gps_lat == pytest.approx(44.85048, abs=1e-4)
    assert exif.gps_lon == pytest.approx(34.97665, abs=1e-4)
    assert exif.iso == 125 and exif.f_number == 1.5


def test_exif_from_canon_jpeg_and_western_gps_in_tiff():
    canon = read_exif(TEST_PHOTOS / "jpeg" / "xmp_test.jpg")
    assert canon.camera_model == "Canon EOS Rebel T6"
    assert canon.lens == "EF-S18-55mm f/3.5-5.6 III"
    assert canon.exposure_time == pytest.approx(0.01)
    flir = read_exif(TEST_PHOTOS / "jpeg" / "ifd_tag_type.tiff")
    assert flir.gps_lat == pytest.approx(35.6, abs=1e-3)
    assert flir.gps_lon == pytest.approx(-111.66183, abs=1e-4)  # W is negative


def test_exif_of_non_photo_is_empty(tmp_path):
    junk = tmp_path / "x.jpg"
    junk.write_text("hello")
    assert read_exif(junk).taken_at is None
    empty = tmp_path / "empty.heic"
    empty.write_bytes(b"")
    assert read_exif(empty).is_empty()


def test_heic_that_exifread_cannot_read_gets_its_date_and_camera():
    """exifread raises AssertionError on this HEIC (EXIF + XMP + IPTC), so nothing was stored."""
    exif = read_exif(TEST_PHOTOS / "heic" / "L_exif_xmp_iptc.heic")
    assert exif.taken_at == dt.datetime(2020, 9, 14, 11, 9, 34)
    assert (exif.camera_make, exif.camera_model) == ("SONY", "ILCE-7SM3")
    assert exif.taken_at_offset == "-05:00" and exif.lens == "FE 24-70mm F2.8 GM"


@pytest.mark.parametrize("path", ALL_PHOTOS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_exiv2_reads_every_field_exifread_reads(path):
    """On every test photo (makers/, orientation/, broken/ included) each field exifread gives,
    Exiv2 gives too, with the same value; read_exif returns what Exiv2 read."""
    by_exifread = exif_module._read_exifread(path)
    try:
        by_exiv2 = exif_module._read_exiv2(path)
    except Exception:  # a file Exiv2 refuses (the broken HEICs): exifread finds nothing in it either
        assert by_exifread.is_empty()
        assert read_exif(path) == by_exifread
        return
    extra = EXIV2_ONLY.get(path.name, set())
    for field in dataclasses.fields(by_exiv2):
        ours, theirs = getattr(by_exiv2, field.name), getattr(by_exifread, field.name)
        if field.name in extra:
            assert ours is not None and theirs is None, field.name
        elif isinstance(theirs, float):
            assert ours == pytest.approx(theirs, rel=1e-12), field.name
        else:
            assert ours == theirs, field.name
    assert read_exif(path) == by_exiv2


def test_file_name_that_is_not_utf8(tmp_path):
    """Exiv2 takes UTF-8 names: a name with a Latin-1 byte is read from a memory map."""
    odd = tmp_path / os.fsdecode(b"caf\xe9.heic")
    shutil.copy(TEST_PHOTOS / "heic" / "L_exif_xmp_iptc.heic", odd)
    exif = exif_module._read_exiv2(odd)
    assert exif.camera_model == "ILCE-7SM3" and exif.taken_at == dt.datetime(2020, 9, 14, 11, 9, 34)


def test_reading_from_many_threads_gives_the_same_fields():
    """The decode pool reads EXIF from several threads at once (Exiv2 parses a HEIC's XMP too)."""
    paths = [TEST_PHOTOS / "heic" / "L_exif_xmp_iptc.heic", TEST_PHOTOS / "heic" / "pug.heic",
             TEST_PHOTOS / "jpeg" / "xmp_test.jpg", TEST_PHOTOS / "makers" / "r_pen.jpg"] * 8
    alone = [read_exif(p) for p in paths]
    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(read_exif, paths)) == alone
