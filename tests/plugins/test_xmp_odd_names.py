"""XMP keywords of photos whose file names are odd: bytes that are not UTF-8 (old archives, NAS
shares), a newline, emoji. exiv2 takes names as UTF-8 text, so these are the names it cannot be
handed; phototag must read and write their keywords like any other photo's (issue 10 item 2).

Real files named with those bytes, real exiv2, the real pipeline and CLI, exiftool as the reader.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from phototag_plugin_helpers import (
    HERE,
    add_photo,
    make_library,  # noqa: F401 - fixture
    model_tag,
    needs_exiftool,
)

from phototag.config import load_settings, use_settings
from phototag.export.service import export_photos
from phototag.ingest import keywords
from phototag.ingest.keywords import read_keywords
from phototag.library import Library
from phototag.pipeline import Pipeline
from phototag_plugins.xmp import sidecar as xmp_sidecar
from watch.helpers import ColourTagger, write_photo

NAMES = [
    pytest.param(b"latin1_\xe9t\xe9.jpg", id="latin1"),
    pytest.param(b"cp1252_\x93quoted\x94.jpg", id="cp1252"),
    pytest.param(b"new\nline.jpg", id="newline"),
    pytest.param("emoji_🐱🏖️.jpg".encode(), id="emoji"),
]


def folder_for(name: bytes) -> bytes:
    """A folder for a photo named ``name``: one whose name is not UTF-8 either for such a name."""
    try:
        name.decode("utf-8")
    except UnicodeDecodeError:
        return b"archiv_\xe9t\xe9"
    return "archiv_été".encode()



def _export_plans_any_name() -> bool:
    """Whether the export service (phototag/export/) can plan a photo whose path is not UTF-8:
    its ``Exporter.content_hash`` encodes the target path as strict UTF-8 today. Until that is
    fixed, exporting such a photo fails before the XMP plugin is asked to write anything."""
    from phototag.export import ExportItem
    from phototag_plugins.xmp import XmpExporter

    try:
        XmpExporter().content_hash(ExportItem(photo_id=1, path=Path(os.fsdecode(b"/p/\xe9.jpg")), sha256="0", tags=[]))
    except UnicodeEncodeError:
        return False
    return True


NEEDS_EXPORT_FIX = pytest.mark.xfail(
    not _export_plans_any_name(), strict=True, raises=AssertionError,
    reason="phototag/export/contract.py Exporter.content_hash: blob.encode('utf-8') fails on a non-UTF-8 target path",
)
#: the names that are not UTF-8, for the tests that export (see NEEDS_EXPORT_FIX)
EXPORT_NAMES = [pytest.param(*p.values, id=p.id, marks=NEEDS_EXPORT_FIX)
                if folder_for(p.values[0]) != folder_for(b"") else p for p in NAMES]

#: the user's own keywords the test photos carry: in the darktable sidecar, and embedded
SIDECAR_KEYWORDS = ["holiday", "pets/cat", "places/Budapest"]
EMBEDDED_KEYWORDS = ["from IPTC", "trips/Rome"]
DARKTABLE = "{http://darktable.sf.net/}history"


def fs(folder: Path, name: bytes) -> Path:
    """The path of ``name`` (raw file-system bytes) in ``folder``, as Python spells it (os.fsdecode)."""
    return Path(os.fsdecode(os.fsencode(folder) + b"/" + name))


def sidecar_of(photo: Path) -> Path:
    """``photo.jpg.xmp``: the photo's own bytes and ``.xmp``."""
    return Path(os.fsdecode(os.fsencode(photo) + b".xmp"))


def photo_with_keywords(path: Path, seed: int = 1) -> Path:
    """A real JPEG at ``path`` with keywords embedded by exiftool in IPTC and XMP, and a darktable
    sidecar (history, keywords). exiftool writes the file under a plain name first: the odd name
    is only what phototag has to cope with."""
    plain = path.parent / f"plain-{seed}.jpg"
    write_photo(plain, seed, colour="red")
    subprocess.run(["exiftool", "-q", "-overwrite_original", "-IPTC:Keywords=from IPTC",
                    "-XMP-lr:HierarchicalSubject=trips|Rome", "-XMP-dc:Subject=Rome", str(plain)], check=True)
    os.rename(plain, path)
    shutil.copy(HERE / "xmp_fixtures" / "darktable.xmp", sidecar_of(path))
    return path


def exiftool(path: Path, *tags: str) -> dict:
    """Tags as exiftool reads them from the file at ``path`` (named by its real bytes)."""
    out = subprocess.run(["exiftool", "-j", "-G1", "-struct", *[f"-{t}" for t in tags], os.fsencode(path)],
                         check=True, capture_output=True).stdout
    return json.loads(out.decode("utf-8", "surrogateescape"))[0]  # SourceFile holds the odd bytes


def history(path: Path) -> str:
    element = ET.parse(path).getroot().find(f".//{DARKTABLE}")
    assert element is not None
    return ET.canonicalize(ET.tostring(element, encoding="unicode"))


def run_cli(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PHOTOTAG_HOME=str(home), COLUMNS="200")
    return subprocess.run([sys.executable, "-m", "phototag", *args], capture_output=True, env=env, timeout=300)


# ---- reading ---------------------------------------------------------------------------------------


@needs_exiftool
@pytest.mark.parametrize("name", NAMES)
def test_keywords_are_read_from_the_photo_and_its_sidecar(tmp_path, name):
    photo = photo_with_keywords(fs(fs(tmp_path, folder_for(name)), name))
    assert read_keywords(photo) == sorted(SIDECAR_KEYWORDS + EMBEDDED_KEYWORDS)
    assert keywords.read_fields_of(sidecar_of(photo)).subject == ["holiday", "cat", "darktable|format|jpg"]


@needs_exiftool
def test_an_unreadable_sidecar_of_an_odd_name_is_skipped_not_fatal(tmp_path):
    photo = photo_with_keywords(fs(tmp_path, b"latin1_\xe9t\xe9.jpg"))
    sidecar_of(photo).write_bytes(b"not an XMP packet")
    assert read_keywords(photo) == EMBEDDED_KEYWORDS
    with pytest.raises(keywords.SidecarError, match="latin1_"):
        keywords.read_fields_of(sidecar_of(photo))


# ---- scan, then export through the CLI ----------------------------------------------------------


@needs_exiftool
@pytest.mark.parametrize("name", EXPORT_NAMES)
def test_scan_imports_the_keywords_and_export_writes_the_sidecar(tmp_path, name):
    root = tmp_path / "Pictures"
    photo = photo_with_keywords(fs(fs(root, folder_for(name)), name))
    before_history = history(sidecar_of(photo))
    fresh = fs(photo.parent, b"new_" + name)  # no sidecar yet: export makes one
    write_photo(fresh, 2, colour="blue")
    photo_bytes = photo.read_bytes()

    settings = load_settings(tmp_path / "home", environ={})
    use_settings(settings)
    lib = Library(settings)
    try:
        report = Pipeline(lib, ColourTagger()).scan([root])
        assert (report.new, report.failed, report.errors) == (2, 0, [])
        with lib.session() as session:
            row = lib.photo_by_path(session, photo)
            assert row.status == "ok" and os.fsencode(row.path) == os.fsencode(photo)
            tags = lib.photo_tags(session, row.id)
    finally:
        lib.close()
        use_settings(None)
    assert {t["name"] for t in tags if t["source"] == "imported"} == {
        "holiday", "cat", "Budapest", "from IPTC", "Rome"}
    assert {t["name"] for t in tags if t["source"] == "model"} == {"red", "dark"}

    proc = run_cli(settings.home, "export", "--to", "xmp", "--format", "json")
    assert proc.returncode == 0, proc.stderr.decode("utf-8", "replace")
    results = json.loads(proc.stdout)
    results = results.get("results", results) if isinstance(results, dict) else results
    assert sorted(r["action"] for r in results) == ["written", "written"], results

    # the existing sidecar: phototag's keywords added, the user's and darktable's kept
    read = exiftool(sidecar_of(photo), "TagsList", "HierarchicalSubject", "Subject")
    assert read["XMP-digiKam:TagsList"] == ["phototag/dark", "phototag/red"]
    assert read["XMP-lr:HierarchicalSubject"][:3] == ["places|Budapest", "pets|cat", "darktable|format|jpg"]
    assert read["XMP-dc:Subject"] == ["holiday", "cat", "darktable|format|jpg", "dark", "red"]
    assert history(sidecar_of(photo)) == before_history
    # the new sidecar, named with the photo's own bytes
    assert exiftool(sidecar_of(fresh), "TagsList")["XMP-digiKam:TagsList"] == ["phototag/blue", "phototag/dark"]
    # the photo itself untouched, nothing else left in the folder (no temporary files)
    assert photo.read_bytes() == photo_bytes
    assert sorted(os.listdir(os.fsencode(photo.parent))) == sorted(
        os.fsencode(p.name) for p in (photo, sidecar_of(photo), fresh, sidecar_of(fresh)))


# ---- writing -------------------------------------------------------------------------------------


@needs_exiftool
@pytest.mark.parametrize("name", EXPORT_NAMES)
def test_keywords_written_into_the_image_through_a_renamed_copy(make_library, tmp_path, name):
    lib = make_library({"plugins": {"enabled": ["xmp"], "xmp": {"write_image": True}}})
    photo = photo_with_keywords(fs(fs(tmp_path, folder_for(name)), name))
    original = photo.read_bytes()
    link = tmp_path / "hardlink-to-original.jpg"
    os.link(photo, link)  # an in-place edit would show through the hard link
    photo_id = add_photo(lib, photo)
    model_tag(lib, photo_id, ["tabby cat"])

    assert export_photos(lib, [photo_id], ["xmp"]).counts() == {"written": 1}

    assert link.read_bytes() == original
    assert photo.stat().st_ino != link.stat().st_ino
    embedded = exiftool(photo, "TagsList", "HierarchicalSubject", "Keywords")
    assert embedded["XMP-digiKam:TagsList"] == ["phototag/animal/cat/tabby cat"]
    assert "trips|Rome" in embedded["XMP-lr:HierarchicalSubject"]
    assert embedded["IPTC:Keywords"] == "from IPTC"
    from PIL import Image

    with Image.open(photo) as img, Image.open(link) as before:
        assert img.tobytes() == before.tobytes()  # the same pixels


def test_an_updated_sidecar_keeps_its_mode_and_gets_a_new_time(tmp_path):
    """digiKam and darktable notice a changed sidecar by its time; the user's mode stays."""
    sidecar = fs(tmp_path, b"latin1_\xe9t\xe9.jpg.xmp")
    shutil.copy(HERE / "xmp_fixtures" / "darktable.xmp", sidecar)
    os.chmod(sidecar, 0o640)
    os.utime(sidecar, (1_000_000_000, 1_000_000_000))  # 2001

    changed, _ = xmp_sidecar.update_keywords(sidecar, [("animal", "cat")], "phototag", create=True)

    assert changed
    st = sidecar.stat()
    assert stat.S_IMODE(st.st_mode) == 0o640
    assert st.st_mtime > 1_500_000_000
    assert keywords.read_fields_of(sidecar).tags_list == ["phototag/animal/cat"]


def test_a_new_sidecar_gets_the_mode_any_new_file_gets(tmp_path):
    umask = os.umask(0o022)
    try:
        sidecar = fs(tmp_path, b"latin1_\xe9t\xe9.jpg.xmp")
        xmp_sidecar.update_keywords(sidecar, [("animal", "cat")], "phototag", create=True)
    finally:
        os.umask(umask)
    assert stat.S_IMODE(sidecar.stat().st_mode) == 0o644  # not mkstemp's private 0600
    assert keywords.read_fields_of(sidecar).tags_list == ["phototag/animal/cat"]


# ---- keyword bytes from before UTF-8 ------------------------------------------------------------

LEGACY_KEYWORDS = ["Café “Zur Post”", "Ölberg"]  # “ ” are Windows-1252's own bytes (0x93, 0x94)


def photo_with_legacy_iptc(path: Path, utf8: bool = False) -> Path:
    """A JPEG whose IPTC keywords are stored as an old tool stored them: Windows-1252 bytes and no
    character set (exiftool's default for IPTC), or declared UTF-8."""
    write_photo(path, 3, colour="green")
    charset = ["-IPTC:CodedCharacterSet=UTF8"] if utf8 else ["-charset", "iptc=cp1252"]
    subprocess.run(["exiftool", "-q", "-overwrite_original", *charset,
                    *[f"-IPTC:Keywords={k}" for k in LEGACY_KEYWORDS], str(path)], check=True)
    raw = path.read_bytes()
    assert ("Ölberg".encode("utf-8") if utf8 else "Ölberg".encode("cp1252")) in raw
    return path


@needs_exiftool
@pytest.mark.parametrize("utf8", [False, True], ids=["cp1252-undeclared", "utf8-declared"])
def test_legacy_iptc_keywords_are_imported_as_text(tmp_path, utf8):
    """Keywords in Windows-1252 (Photoshop before UTF-8) came out of exiv2 as lone surrogates,
    which SQLite refused: the scan stopped with 'cannot store a batch'."""
    root = tmp_path / "Pictures"
    photo = photo_with_legacy_iptc(root / "scan_1998.jpg", utf8)
    assert read_keywords(photo) == LEGACY_KEYWORDS

    settings = load_settings(tmp_path / "home", environ={})
    use_settings(settings)
    lib = Library(settings)
    try:
        report = Pipeline(lib, ColourTagger()).scan([root])
        assert (report.new, report.failed, report.errors) == (1, 0, [])
        with lib.session() as session:
            tags = lib.photo_tags(session, lib.photo_by_path(session, photo).id)
    finally:
        lib.close()
        use_settings(None)
    assert sorted(t["name"] for t in tags if t["source"] == "imported") == LEGACY_KEYWORDS
