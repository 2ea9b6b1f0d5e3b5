"""The XMP exporter, checked with exiftool as an independent reader."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import save_sample
from phototag_plugin_helpers import (
    HERE,
    add_photo,
    exiftool_json,
    exiftool_xml,
    import_tags,
    list_type,
    make_library,  # noqa: F401 - fixture
    model_tag,
    needs_exiftool,
)

from phototag.atomic import remove_stale_temp_files
from phototag.db.models import ExportState
from phototag.export.service import PENDING_PREFIX, export_photos
from phototag.ingest import keywords
from phototag.ingest.keywords import read_keywords
from phototag_plugins.xmp import XmpExporter
from phototag_plugins.xmp import sidecar as xmp_sidecar

XMP_ON = {"plugins": {"enabled": ["xmp"]}}
KEYWORD_TAGS = {"TagsList", "HierarchicalSubject", "Subject", "Subjects", "Written", "Manual"}


def _cat_library(make_library, tmp_path, config=XMP_ON):
    lib = make_library(config)
    photo = save_sample("chelsea", tmp_path / "photos" / "cat.jpg", size=256)
    photo_id = add_photo(lib, photo)
    model_tag(lib, photo_id, ["tabby cat", "indoor"])
    with lib.session() as session:
        from phototag.db.models import Photo

        lib.add_manual_tags(session, session.get(Photo, photo_id), ["favourite"])
    import_tags(lib, photo_id, ["places/Budapest"])
    return lib, photo, photo_id


@needs_exiftool
def test_exiftool_reads_the_three_keyword_fields_with_their_list_types(make_library, tmp_path):
    lib, photo, photo_id = _cat_library(make_library, tmp_path)
    report = export_photos(lib, [photo_id], ["xmp"])
    assert report.counts() == {"written": 1}
    sidecar = photo.with_name("cat.jpg.xmp")  # the default style for new sidecars
    assert report.results[0].target == str(sidecar)

    # model tags with their ancestors' path, the manual tag, never the imported one (the user's own)
    assert list_type(sidecar, "digiKam:TagsList") == ("Seq", [
        "phototag/animal/cat/tabby cat", "phototag/favourite", "phototag/indoor"])
    assert list_type(sidecar, "lr:hierarchicalSubject") == ("Bag", [
        "phototag|animal", "phototag|animal|cat", "phototag|animal|cat|tabby cat",
        "phototag|favourite", "phototag|indoor"])
    assert list_type(sidecar, "dc:subject") == ("Bag", ["tabby cat", "favourite", "indoor"])
    with lib.session() as session:
        state = session.query(ExportState).one()
        assert (state.photo_id, state.exporter, state.target) == (photo_id, "xmp", str(sidecar))


@needs_exiftool
def test_chinese_names_are_written_when_asked(make_library, tmp_path):
    config = {"plugins": {"enabled": ["xmp"], "xmp": {"languages": ["en", "zh"]}}}
    lib, photo, photo_id = _cat_library(make_library, tmp_path, config)
    export_photos(lib, [photo_id], ["xmp"])
    kind, items = list_type(photo.with_name("cat.jpg.xmp"), "digiKam:TagsList")
    assert "phototag/动物/猫/虎斑猫" in items and "phototag/animal/cat/tabby cat" in items
    assert "phototag/indoor" in items  # no Chinese name: the English one is kept


def _non_keyword_xml(path: Path) -> list[str]:
    """exiftool -X output of every tag except the keyword fields and the file system's, each tag
    whole (-struct keeps darktable's history as one element, in order), sorted by tag: exiv2 may
    write the properties of a packet in another order, which XMP says does not matter."""
    root = exiftool_xml(path)
    description = root[0]
    kept = []
    for element in description:
        namespace, _, local = element.tag[1:].partition("}")
        if "/System/" in namespace or "/File/" in namespace or "ExifTool" in namespace:
            continue
        if local in KEYWORD_TAGS:
            continue
        kept.append(ET.tostring(element, encoding="unicode"))
    return sorted(kept)


def _history_c14n(path: Path) -> str:
    tree = ET.parse(path)
    element = tree.getroot().find(".//{http://darktable.sf.net/}history")
    assert element is not None
    return ET.canonicalize(ET.tostring(element, encoding="unicode"))


@needs_exiftool
def test_darktable_sidecar_keeps_history_and_user_keywords(make_library, tmp_path):
    lib, photo, photo_id = _cat_library(make_library, tmp_path)
    sidecar = photo.with_name("cat.jpg.xmp")
    shutil.copy(HERE / "xmp_fixtures" / "darktable.xmp", sidecar)
    before_other = _non_keyword_xml(sidecar)
    before_history = _history_c14n(sidecar)
    assert any("History" in e for e in before_other)  # the comparison does see darktable's data

    export_photos(lib, [photo_id], ["xmp"])

    assert _non_keyword_xml(sidecar) == before_other
    assert _history_c14n(sidecar) == before_history
    tags = exiftool_json(sidecar, "TagsList", "HierarchicalSubject", "Subject")
    assert tags["XMP-lr:HierarchicalSubject"] == [
        "places|Budapest", "pets|cat", "darktable|format|jpg",
        "phototag|animal", "phototag|animal|cat", "phototag|animal|cat|tabby cat",
        "phototag|favourite", "phototag|indoor"]
    # "cat" was the user's before phototag came: it is neither duplicated nor claimed
    assert tags["XMP-dc:Subject"] == ["holiday", "cat", "darktable|format|jpg", "tabby cat", "favourite", "indoor"]


@needs_exiftool
def test_reexport_after_retag_removes_stale_tags_and_nothing_else(make_library, tmp_path):
    lib, photo, photo_id = _cat_library(make_library, tmp_path)
    sidecar = photo.with_name("cat.jpg.xmp")
    shutil.copy(HERE / "xmp_fixtures" / "darktable.xmp", sidecar)
    before_other = _non_keyword_xml(sidecar)
    export_photos(lib, [photo_id], ["xmp"])

    model_tag(lib, photo_id, ["dog"])  # a re-tag: tabby cat and indoor are gone
    report = export_photos(lib, [photo_id], ["xmp"])
    assert report.counts() == {"written": 1}

    tags = exiftool_json(sidecar, "TagsList", "HierarchicalSubject", "Subject")
    assert tags["XMP-digiKam:TagsList"] == ["phototag/animal/dog", "phototag/favourite"]
    assert tags["XMP-lr:HierarchicalSubject"] == [
        "places|Budapest", "pets|cat", "darktable|format|jpg",
        "phototag|animal", "phototag|animal|dog", "phototag|favourite"]
    assert tags["XMP-dc:Subject"] == ["holiday", "cat", "darktable|format|jpg", "dog", "favourite"]
    assert _non_keyword_xml(sidecar) == before_other

    model_tag(lib, photo_id, [])  # nothing left from the model; the manual tag stays
    with lib.session() as session:
        from phototag.db.models import Photo

        lib.remove_tags(session, session.get(Photo, photo_id), ["favourite"])
    export_photos(lib, [photo_id], ["xmp"])
    tags = exiftool_json(sidecar, "TagsList", "HierarchicalSubject", "Subject")
    assert "XMP-digiKam:TagsList" not in tags
    assert tags["XMP-lr:HierarchicalSubject"] == ["places|Budapest", "pets|cat", "darktable|format|jpg"]
    assert tags["XMP-dc:Subject"] == ["holiday", "cat", "darktable|format|jpg"]


def test_unchanged_photos_are_skipped_and_a_deleted_sidecar_is_rewritten(make_library, tmp_path):
    lib, photo, photo_id = _cat_library(make_library, tmp_path)
    sidecar = photo.with_name("cat.jpg.xmp")
    assert export_photos(lib, None, ["xmp"]).counts() == {"written": 1}
    mtime = sidecar.stat().st_mtime_ns
    assert export_photos(lib, None, ["xmp"]).counts() == {"unchanged": 1}
    assert sidecar.stat().st_mtime_ns == mtime
    assert export_photos(lib, None, ["xmp"], force=True).counts() == {"written": 1}
    sidecar.unlink()
    assert export_photos(lib, None, ["xmp"]).counts() == {"written": 1}
    assert sidecar.exists()


def test_dry_run_writes_nothing(make_library, tmp_path):
    lib, photo, photo_id = _cat_library(make_library, tmp_path)
    report = export_photos(lib, [photo_id], ["xmp"], dry_run=True)
    assert [r.action for r in report.results] == ["would-write"]
    assert not photo.with_name("cat.jpg.xmp").exists()
    with lib.session() as session:
        assert session.query(ExportState).count() == 0


def test_sidecar_names(tmp_path):
    photo = save_sample("coffee", tmp_path / "coffee.jpg", size=64)
    stem_style, ext_style = photo.with_suffix(".xmp"), photo.with_name("coffee.jpg.xmp")
    assert xmp_sidecar.sidecar_path(photo) == ext_style
    assert xmp_sidecar.sidecar_path(photo, "name.xmp") == stem_style
    ext_style.write_text("")
    assert xmp_sidecar.sidecar_path(photo, "name.xmp") == ext_style  # an existing one wins
    stem_style.write_text("")
    assert xmp_sidecar.sidecar_path(photo) == stem_style  # both: photo.xmp, as digiKam
    assert keywords.find_sidecars(photo) == [stem_style, ext_style]


@needs_exiftool
def test_existing_photo_xmp_is_updated_and_the_other_name_left_alone(make_library, tmp_path):
    lib, photo, photo_id = _cat_library(make_library, tmp_path)
    stem_style, ext_style = photo.with_suffix(".xmp"), photo.with_name("cat.jpg.xmp")
    shutil.copy(HERE / "xmp_fixtures" / "darktable.xmp", stem_style)
    shutil.copy(HERE / "xmp_fixtures" / "darktable.xmp", ext_style)
    untouched = ext_style.read_bytes()
    export_photos(lib, [photo_id], ["xmp"])
    assert ext_style.read_bytes() == untouched
    assert "phototag/indoor" in exiftool_json(stem_style, "TagsList")["XMP-digiKam:TagsList"]


@needs_exiftool
def test_writing_into_the_image_goes_through_a_renamed_copy(make_library, tmp_path):
    config = {"plugins": {"enabled": ["xmp"], "xmp": {"write_image": True}}}
    lib, photo, photo_id = _cat_library(make_library, tmp_path, config)
    original = photo.read_bytes()
    link = tmp_path / "hardlink-to-original.jpg"
    os.link(photo, link)  # an in-place edit would show through the hard link
    export_photos(lib, [photo_id], ["xmp"])
    assert link.read_bytes() == original
    assert photo.stat().st_ino != link.stat().st_ino
    embedded = exiftool_json(photo, "TagsList", "Subject")
    assert embedded["XMP-digiKam:TagsList"] == [
        "phototag/animal/cat/tabby cat", "phototag/favourite", "phototag/indoor"]
    assert photo.with_name("cat.jpg.xmp").exists()  # the sidecar is still written
    from PIL import Image

    with Image.open(photo) as img:  # still a valid JPEG with the same pixels
        img.load()
        assert img.size == Image.open(link).size


def test_failure_before_the_rename_leaves_the_old_sidecar_intact(make_library, tmp_path, monkeypatch):
    lib, photo, photo_id = _cat_library(make_library, tmp_path)
    sidecar = photo.with_name("cat.jpg.xmp")
    shutil.copy(HERE / "xmp_fixtures" / "darktable.xmp", sidecar)
    before = sidecar.read_bytes()

    def failing_replace(src, dst):
        raise OSError("disk full (injected)")

    monkeypatch.setattr(os, "replace", failing_replace)
    report = export_photos(lib, [photo_id], ["xmp"])
    assert [r.action for r in report.results] == ["failed"]
    assert "disk full" in report.results[0].detail
    assert sidecar.read_bytes() == before
    assert sorted(p.name for p in sidecar.parent.iterdir()) == ["cat.jpg", "cat.jpg.xmp"]  # no temp left
    with lib.session() as session:  # the state claims nothing was written: retried next time
        assert session.query(ExportState).one().content_hash.startswith(PENDING_PREFIX)
    monkeypatch.undo()
    assert export_photos(lib, [photo_id], ["xmp"]).counts() == {"written": 1}


KILL_LOOP = textwrap.dedent("""
    import sys
    from pathlib import Path
    from phototag_plugins.xmp.sidecar import update_keywords
    target = Path(sys.argv[1])
    sets = [[("set", "a", f"tag {i:03d}") for i in range(300)], [("set", "b", f"tag {i:03d}") for i in range(150)]]
    print("ready", flush=True)
    n = 0
    while True:
        update_keywords(target, sets[n % 2], "phototag", create=True)
        n += 1
""")


@needs_exiftool
def test_killing_the_writer_never_leaves_a_truncated_sidecar(tmp_path):
    sidecar = tmp_path / "photo.jpg.xmp"
    shutil.copy(HERE / "xmp_fixtures" / "darktable.xmp", sidecar)
    history = _history_c14n(sidecar)
    for attempt in range(4):
        proc = subprocess.Popen([sys.executable, "-c", KILL_LOOP, str(sidecar)], stdout=subprocess.PIPE)
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(0.4 + 0.37 * attempt)  # several writes in, somewhere in the middle of one
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        items = exiftool_json(sidecar, "TagsList").get("XMP-digiKam:TagsList", [])
        assert len(items) in (300, 150), f"attempt {attempt}: {len(items)} items"
        assert len({i.split("/")[2] for i in items}) == 1  # one whole set, never a mix
        assert _history_c14n(sidecar) == history
    remove_stale_temp_files(tmp_path)  # what a killed writer may have left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photo.jpg.xmp"]


def test_temp_files_of_dead_writers_are_cleaned_up_on_the_next_export(make_library, tmp_path):
    lib, photo, photo_id = _cat_library(make_library, tmp_path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = photo.parent / f".cat.jpg.xmp.{dead.pid}.abc12345.tmp"
    live = photo.parent / f".cat.jpg.xmp.{os.getpid()}.def45678.tmp"
    stale.write_text("half a sidecar")
    live.write_text("being written right now")
    export_photos(lib, [photo_id], ["xmp"])
    assert not stale.exists() and live.exists()


def test_an_empty_sidecar_is_filled(make_library, tmp_path):
    lib, photo, photo_id = _cat_library(make_library, tmp_path)
    sidecar = photo.with_name("cat.jpg.xmp")
    sidecar.write_bytes(b"")
    assert export_photos(lib, [photo_id], ["xmp"]).counts() == {"written": 1}
    assert "phototag/indoor" in keywords.read_fields_of(sidecar).tags_list


def test_write_image_leaves_formats_exiv2_cannot_write_alone(make_library, tmp_path):
    from conftest import TEST_PHOTOS

    source = TEST_PHOTOS / "heic" / "L_exif_xmp_iptc.heic"
    if not source.exists():
        pytest.skip("../shared/test-photos is not there")
    lib = make_library({"plugins": {"enabled": ["xmp"], "xmp": {"write_image": True}}})
    photo = tmp_path / "small.heic"
    shutil.copy(source, photo)
    photo_id = add_photo(lib, photo)
    model_tag(lib, photo_id, ["tabby cat"])
    report = export_photos(lib, [photo_id], ["xmp"])
    assert report.results[0].action == "written"
    assert "cannot safely write .heic" in report.results[0].detail
    assert photo.read_bytes() == source.read_bytes()
    assert keywords.read_fields_of(photo.with_name("small.heic.xmp")).tags_list == [
        "phototag/animal/cat/tabby cat"]


def test_read_keywords_returns_the_users_keywords_only(tmp_path):
    photo = save_sample("chelsea", tmp_path / "cat.jpg", size=64)
    sidecar = photo.with_name("cat.jpg.xmp")
    shutil.copy(HERE / "xmp_fixtures" / "darktable.xmp", sidecar)
    xmp_sidecar.update_keywords(sidecar, [("animal", "cat"), ("indoor",)], "phototag", create=False)
    # phototag's own tree and the leaf names it added are not the user's; darktable's are bookkeeping
    assert read_keywords(photo) == ["holiday", "pets/cat", "places/Budapest"]


def test_read_keywords_of_embedded_iptc(tmp_path):
    from conftest import TEST_PHOTOS

    source = TEST_PHOTOS / "jpeg" / "iptc.jpg"
    if not source.exists():
        pytest.skip("../shared/test-photos is not there")
    assert read_keywords(source) == ["2006", "Budapest", "Hungary", "HvK", "July", "holiday", "summer"]


def test_read_keywords_of_a_digikam_style_sidecar(tmp_path):
    photo = save_sample("coffee", tmp_path / "coffee.jpg", size=64)
    xmp_sidecar.update_keywords(photo.with_suffix(".xmp"), [("Trips", "Rome"), ("Food",)], "Family", create=True)
    # another root than phototag's: these are the user's keywords (e.g. written by digiKam)
    assert read_keywords(photo) == ["Family/Food", "Family/Trips/Rome"]


def test_bad_settings_are_reported_clearly():
    from phototag.export import ExportError

    with pytest.raises(ExportError, match="languages"):
        XmpExporter({"languages": ["fr"]})
    with pytest.raises(ExportError, match="root"):
        XmpExporter({"root": "a/b"})
    with pytest.raises(xmp_sidecar.XmpError, match="sidecar style"):
        XmpExporter({"sidecar_style": "weird"})


@needs_exiftool
def test_odd_tag_names_slash_and_control_characters(make_library, tmp_path):
    """A flat tag "AC/DC" stays one keyword level; control characters are not passed off as spaces
    silently: they are replaced (tab, line break → space) or dropped, and the result says so."""
    from phototag.db.models import Photo

    lib = make_library(XMP_ON)
    photo = save_sample("coffee", tmp_path / "photos" / "band.jpg", size=64)
    photo_id = add_photo(lib, photo)
    with lib.session() as session:
        lib.add_manual_tags(session, session.get(Photo, photo_id),
                            ["AC/DC", "bell\x07ring", "line\nbreak", "\x1b\x1b", "a|b"])
    report = export_photos(lib, [photo_id], ["xmp"])
    assert report.counts() == {"written": 1}
    detail = report.results[0].detail
    assert "tag 'bell\\x07ring' has control characters: written as 'bellring'" in detail
    assert "tag 'line\\nbreak' has control characters: written as 'line break'" in detail
    assert "tag '\\x1b\\x1b' is only control characters: not written" in detail

    found = exiftool_json(photo.with_name("band.jpg.xmp"), "XMP-digiKam:TagsList", "XMP-lr:HierarchicalSubject",
                          "XMP-dc:Subject")
    assert sorted(found["XMP-digiKam:TagsList"]) == [
        "phototag/AC\u2215DC", "phototag/a|b", "phototag/bellring", "phototag/line break"]
    assert sorted(found["XMP-lr:HierarchicalSubject"]) == [
        "phototag|AC/DC", "phototag|a\u2223b", "phototag|bellring", "phototag|line break"]
    assert sorted(found["XMP-dc:Subject"]) == ["AC/DC", "a|b", "bellring", "line break"]
    # what digiKam makes of TagsList: one level below phototag for each tag
    assert all(v.count("/") == 1 for v in found["XMP-digiKam:TagsList"])


@needs_exiftool
def test_a_sidecar_written_before_separators_were_replaced_is_rewritten(make_library, tmp_path):
    """Upgrade: the state of a photo with "AC/DC" was recorded by the old format (TagsList
    "phototag/AC/DC", hash without the separator marker): the next export must rewrite it, while a
    photo without such names stays unchanged."""
    from phototag.db.models import Photo
    from phototag.export import Exporter
    from phototag.export.service import load_items

    lib = make_library(XMP_ON)
    band = save_sample("coffee", tmp_path / "photos" / "band.jpg", size=64)
    cat = save_sample("chelsea", tmp_path / "photos" / "cat.jpg", size=64)
    band_id, cat_id = add_photo(lib, band), add_photo(lib, cat)
    model_tag(lib, cat_id, ["indoor"])
    with lib.session() as session:
        lib.add_manual_tags(session, session.get(Photo, band_id), ["AC/DC"])
    assert export_photos(lib, None, ["xmp"]).counts() == {"written": 2}
    sidecar = band.with_name("band.jpg.xmp")
    xmp_sidecar.update_keywords(sidecar, [("AC", "DC")], "phototag", create=False)  # what the old format wrote
    exporter = XmpExporter()
    with lib.session() as session:
        item = load_items(session, [band_id])[0]
        state = session.query(ExportState).filter_by(photo_id=band_id).one()
        state.content_hash = Exporter.content_hash(exporter, item)  # the old format's hash
        session.get(Photo, band_id).sidecar_stat = None  # nor did it record the sidecar's stat (before 0005)
        session.commit()

    assert export_photos(lib, None, ["xmp"]).counts() == {"written": 1, "unchanged": 1}
    found = exiftool_json(sidecar, "XMP-digiKam:TagsList")
    assert found["XMP-digiKam:TagsList"] == ["phototag/AC\u2215DC"]
