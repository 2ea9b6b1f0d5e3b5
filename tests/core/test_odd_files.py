"""Odd files a real library holds: names that are not UTF-8 (old archives, NAS shares), names with
newlines, leading dashes, emoji; 100+ megapixel photos; link loops; truncated HEICs.

Everything runs on real files in tmp dirs, a real SQLite library and the real pipeline (with a tiny
real model, ``ColourTagger``); the CLI runs as real processes.
"""

from __future__ import annotations

import io
import json
import os
import random
import re
import shutil
import sqlite3
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from PIL import Image

from conftest import TEST_PHOTOS
from phototag.config import load_settings, use_settings
from phototag.db.models import PATH_ESCAPE, Photo, decode_path, encode_path
from phototag.ingest.decode import DecodeError, decode_photo
from phototag.ingest.walk import iter_photo_files
from phototag.library import Library
from phototag.pipeline import Pipeline
from watch.helpers import ColourTagger, tag_names, wait_for, watching, write_photo

EXTS = [".jpg", ".jpeg", ".png", ".heic"]


def fs(folder: Path, name: bytes) -> Path:
    """The path of ``name`` (raw file-system bytes) in ``folder``, as Python spells it (os.fsdecode)."""
    return Path(os.fsdecode(os.fsencode(folder) + b"/" + name))


@pytest.fixture
def make_library(tmp_path):
    libraries: list[Library] = []

    def make(**env: str) -> Library:
        settings = load_settings(tmp_path / f"home{len(libraries)}", environ=env)
        use_settings(settings)
        lib = Library(settings)
        libraries.append(lib)
        return lib

    yield make
    for lib in libraries:
        lib.close()
    use_settings(None)


# ---- the stored form of a path -----------------------------------------------------------------


def test_path_codec_round_trips_every_name_and_leaves_utf8_names_as_they_are():
    alphabet = ["a", "Z", "/", ".", "-", " ", "\n", "%", "_", "\\", "é", "猫", "🐱", "e", "9", "f", "8",
                PATH_ESCAPE, "\udc80", "\udce9", "\udcff", "\udc93"]
    rng = random.Random(10)
    for _ in range(5000):
        name = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
        stored = encode_path(name)
        stored.encode("utf-8")  # SQLite text: valid UTF-8, or this raises
        assert decode_path(stored) == name
        if not any(ch == PATH_ESCAPE or "\udc80" <= ch <= "\udcff" for ch in name):
            assert stored == name
    # the exact scheme (docs in phototag/db/models.py)
    assert encode_path("/p/latin1_\udce9t\udce9.jpg") == "/p/latin1_\uffffe9t\uffffe9.jpg"
    assert encode_path("/p/\uffff.jpg") == "/p/\uffff\uffff.jpg"
    # a real name spelled like an escape does not collide with the escaped byte
    assert encode_path("\uffffe9") != encode_path("\udce9")
    assert decode_path(encode_path("\uffffe9")) == "\uffffe9"
    with pytest.raises(ValueError, match="not a file system path"):
        encode_path("\ud800")  # never produced by os.fsdecode


def test_paths_stored_by_an_earlier_phototag_read_back_unchanged(make_library, tmp_path):
    """No migration: rows written before the escaping scheme (always valid UTF-8) are the same rows."""
    lib = make_library()
    names = ["/p/été.jpg", "/p/猫/🐱.heic", "/p/new\nline.jpg", "/p/-rf.jpg", "/p/100%_done.jpg", "/p/back\\slash.jpg"]
    conn = sqlite3.connect(lib.settings.db_path)
    with conn:
        conn.executemany("INSERT INTO photos (path, root, status, added_at, updated_at) "
                         "VALUES (?, '/p', 'ok', '2020-01-01', '2020-01-01')", [(n,) for n in names])
    conn.close()
    with lib.session() as s:
        assert sorted(p.path for p in s.query(Photo)) == sorted(names)
        for name in names:
            assert lib.photo_by_path(s, name).path == name
        under = s.query(Photo).where(Photo.path.startswith("/p/", autoescape=True)).count()
        assert under == len(names)
        percent = s.query(Photo).where(Photo.path.startswith("/p/100%", autoescape=True)).all()
        assert [p.path for p in percent] == ["/p/100%_done.jpg"]


# ---- scanning odd names ------------------------------------------------------------------------


ODD_NAMES = [
    pytest.param(b"latin1_\xe9t\xe9.jpg", id="latin1"),
    pytest.param(b"cp1252_\x93quoted\x94.jpg", id="cp1252"),
    pytest.param(b"new\nline.jpg", id="newline"),
    pytest.param(b"-rf leading dash.jpg", id="leading-dash"),
    pytest.param("emoji_🐱🏖️.jpg".encode(), id="emoji"),
    pytest.param(b"100%_[red]_back\\slash.jpg", id="like-and-markup"),
    pytest.param("noncharacter_\uffffe9.jpg".encode(), id="escape-lookalike"),
]


@pytest.mark.parametrize("name", ODD_NAMES)
def test_odd_name_is_tagged_unchanged_on_rescan_found_moved_and_marked_missing(make_library, tmp_path, name):
    from phototag.query import search

    lib = make_library()
    tagger = ColourTagger()
    root = tmp_path / "Pictures"
    photo = fs(root, name)
    write_photo(photo, 1, colour="red")
    write_photo(root / "plain.jpg", 2, colour="blue")

    report = Pipeline(lib, tagger).scan([root])
    assert (report.new, report.failed, report.errors) == (2, 0, [])
    assert "red" in tag_names(lib, photo)
    with lib.session() as s:
        row = lib.photo_by_path(s, photo)
        assert row.status == "ok" and os.fsencode(row.path) == os.fsencode(photo)
        photo_id = row.id
        # the query language finds it by a piece of its name and by its exact path
        piece = re.split(r"[*?\[]", os.fsdecode(name))[0][:9]  # no glob characters: a substring
        assert [p.id for p in search(s, [f"path:{piece}"])] == [photo_id]
        assert [p.id for p in search(s, [f"path:={photo}"])] == [photo_id]
        assert [p.id for p in search(s, [f"path:{root}"])] != []

    again = Pipeline(lib, tagger).scan([root])
    assert (again.unchanged, again.tagged, again.failed) == (2, 0, 0)

    dest = fs(fs(root, b"moved_\xe9_dir"), name)  # into a folder whose name is not UTF-8 either
    dest.parent.mkdir()
    os.rename(photo, dest)
    moved = Pipeline(lib, tagger).scan([root])
    assert (moved.moved, moved.new, moved.tagged, moved.failed) == (1, 0, 0, 0)
    with lib.session() as s:
        assert lib.photo_by_path(s, dest).id == photo_id
        assert lib.photo_by_path(s, photo) is None
    assert "red" in tag_names(lib, dest)

    dest.unlink()
    gone = Pipeline(lib, tagger).scan([root])
    assert gone.missing == 1
    with lib.session() as s:
        assert lib.photo_by_path(s, dest).status == "missing"
        assert lib.photo_by_path(s, root / "plain.jpg").status == "ok"


def test_a_root_folder_whose_name_is_not_utf8_is_scanned_and_its_vanished_photos_marked(make_library, tmp_path):
    lib = make_library()
    tagger = ColourTagger()
    root = fs(tmp_path, b"Bilder_\xe9")
    for i in range(3):
        write_photo(root / "2020" / f"p{i}.jpg", i)
    sibling = fs(tmp_path, b"Bilder_\xe9_alt")  # shares the root's name as a prefix: never touched
    write_photo(sibling / "keep.jpg", 7)
    assert Pipeline(lib, tagger).scan([root, sibling]).new == 4
    (root / "2020" / "p1.jpg").unlink()
    report = Pipeline(lib, tagger).scan([root])
    assert (report.missing, report.unchanged) == (1, 2)
    with lib.session() as s:
        assert lib.photo_by_path(s, root / "2020" / "p1.jpg").status == "missing"
        assert lib.photo_by_path(s, sibling / "keep.jpg").status == "ok"
        assert {p.root for p in s.query(Photo)} == {str(root), str(sibling)}


def test_non_utf8_name_is_stored_as_valid_utf8_text(make_library, tmp_path):
    """Other tools read the library: the stored text is valid UTF-8 (the byte as an escape)."""
    lib = make_library()
    root = tmp_path / "Pictures"
    photo = fs(root, b"latin1_\xe9t\xe9.jpg")
    write_photo(photo, 1)
    Pipeline(lib, ColourTagger()).scan([root])
    conn = sqlite3.connect(lib.settings.db_path)
    stored = [r[0] for r in conn.execute("SELECT path FROM photos")]
    conn.close()
    assert stored == [encode_path(str(photo))]
    assert stored[0].endswith("latin1_\uffffe9t\uffffe9.jpg")


# ---- the CLI shows odd names escaped and gives scripts the real bytes -----------------------------


def run_cli(home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, PHOTOTAG_HOME=str(home), COLUMNS="200")
    proc = subprocess.run([sys.executable, "-m", "phototag", *args], capture_output=True, env=env, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"phototag {args} exited {proc.returncode}:\n{proc.stdout!r}\n{proc.stderr.decode()}")
    return proc


def test_cli_search_show_status_show_odd_names_escaped_and_print0_gives_the_bytes(make_library, tmp_path):
    lib = make_library()
    root = tmp_path / "Pictures"
    names = [b"latin1_\xe9t\xe9.jpg", b"new\nline.jpg", b"-rf.jpg", "emoji_🐱.jpg".encode(), b"[red]x.jpg"]
    for i, name in enumerate(names):
        write_photo(fs(root, name), i, colour="red")
    assert Pipeline(lib, ColourTagger()).scan([root]).new == len(names)
    lib.close()
    home = lib.settings.home
    real = sorted(os.fsencode(fs(root, n)) for n in names)

    lines = run_cli(home, "search", "red").stdout.decode("utf-8").splitlines()
    assert len(lines) == len(names)  # the newline in a name does not split it in two
    assert f"{root}/latin1_\\xe9t\\xe9.jpg" in lines
    assert f"{root}/new\\nline.jpg" in lines
    assert f"{root}/emoji_🐱.jpg" in lines and f"{root}/[red]x.jpg" in lines

    raw = run_cli(home, "search", "red", "--print0").stdout
    assert sorted(raw.split(b"\0")[:-1]) == real and raw.endswith(b"\0")

    hits = json.loads(run_cli(home, "search", "red", "--format", "json").stdout)
    assert sorted(os.fsencode(h["path"]) for h in hits) == real  # JSON keeps the bytes (\udcXX escapes)

    table = run_cli(home, "search", "red", "--format", "table").stdout.decode("utf-8")
    assert "latin1_\\xe9t\\xe9.jpg" in table and "[red]x.jpg" in table

    odd = fs(root, b"latin1_\xe9t\xe9.jpg")
    shown = run_cli(home, "show", str(odd)).stdout.decode("utf-8")
    assert f"{root}/latin1_\\xe9t\\xe9.jpg" in shown and "red" in shown
    shown_json = json.loads(run_cli(home, "show", str(odd), "--format", "json").stdout)
    assert shown_json["path"] == str(odd)

    status = run_cli(home, "status").stdout.decode("utf-8")
    assert "photos: 5 (5 ok" in status
    assert json.loads(run_cli(home, "status", "--format", "json").stdout)["photos"]["total"] == 5


def test_cli_lists_a_non_utf8_error_without_crashing(tmp_path):
    """A broken file whose name is not UTF-8 is listed (escaped) as an error; JSON does not crash."""
    home = tmp_path / "home"
    root = tmp_path / "Pictures"
    root.mkdir()
    fs(root, b"broken_\xe9.jpg").write_bytes(b"not a photo")
    summary = json.loads(run_cli(home, "scan", str(root), "--format", "json").stdout)
    assert summary["failed"] == 1
    assert os.fsencode(summary["errors"][0]["path"]) == os.fsencode(fs(root, b"broken_\xe9.jpg"))
    errors = run_cli(home, "search", "status:error").stdout.decode("utf-8").splitlines()
    assert errors == [f"{root}/broken_\\xe9.jpg"]
    assert run_cli(home, "show", str(fs(root, b"broken_\xe9.jpg"))).returncode == 0


# ---- watch ---------------------------------------------------------------------------------------


def test_watch_tags_non_utf8_names_at_start_and_live_and_follows_their_moves(make_library, tmp_path):
    lib = make_library()
    tagger = ColourTagger()
    root = tmp_path / "Pictures"
    there = fs(root, b"latin1_\xe9t\xe9.jpg")
    write_photo(there, 1, colour="red")  # found by the start-up catch-up
    with watching(lib, tagger, [root]):
        wait_for(lambda: "red" in tag_names(lib, there), 20, what="the photo there at start tagged")
        live = fs(root, b"cp1252_\x93new\x94.jpg")
        write_photo(live, 2, colour="green")
        wait_for(lambda: "green" in tag_names(lib, live), 20, what="the new photo tagged")
        folder = fs(root, b"dir_\xff")
        folder.mkdir()
        os.rename(there, folder / "moved.jpg")
        wait_for(lambda: "red" in tag_names(lib, folder / "moved.jpg"), 20, what="the move followed")
    assert tagger.predicted == 2  # the move did no model work


# ---- very large photos ----------------------------------------------------------------------------


def _upscaled_photo_jpeg(path: Path, width: int, height: int, mode: str = "RGB") -> Path:
    """A real photo (scikit-image's astronaut) upscaled to ``width``×``height``, as a JPEG."""
    from skimage import data

    img = Image.fromarray(data.astronaut()).convert(mode).resize((width, height), Image.Resampling.NEAREST)
    img.save(path, quality=60)
    img.close()
    return path


def _png_bomb(path: Path, width: int, height: int) -> Path:
    """A valid, all-black greyscale PNG of ``width``×``height`` (a few hundred KB), written row by row."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    packer = zlib.compressobj(9)
    row = b"\0" * (width + 1)  # filter byte + pixels
    body = io.BytesIO()
    for _ in range(height):
        body.write(packer.compress(row))
    body.write(packer.flush())
    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body.getvalue())
                     + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def big_photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("big")
    return {
        "medium_format": _upscaled_photo_jpeg(folder / "gfx100.jpg", 11648, 8736),  # 101.8 MP
        "pano": _upscaled_photo_jpeg(folder / "pano.jpg", 24000, 6000, "L"),  # 144 MP, black and white
    }


def test_100_and_144_megapixel_photos_are_tagged_and_a_bigger_one_is_a_recorded_error(make_library, tmp_path,
                                                                                        big_photos):
    lib = make_library()
    root = tmp_path / "Pictures"
    root.mkdir()
    for photo in big_photos.values():
        os.link(photo, root / photo.name)
    _png_bomb(root / "bomb.png", 20000, 16000)  # 320 MP: above the default scan.max_pixels (300 MP)
    report = Pipeline(lib, ColourTagger(), decode_workers=2).scan([root])
    assert (report.new, report.failed) == (2, 1), report.errors
    with lib.session() as s:
        gfx = lib.photo_by_path(s, root / "gfx100.jpg")
        pano = lib.photo_by_path(s, root / "pano.jpg")
        bomb = lib.photo_by_path(s, root / "bomb.png")
        assert (gfx.status, gfx.width, gfx.height) == ("ok", 11648, 8736) and gfx.tagged_run_id
        assert (pano.status, pano.width, pano.height) == ("ok", 24000, 6000) and pano.tagged_run_id
        assert bomb.status == "error" and "scan.max_pixels" in bomb.error and "320.0 MP" in bomb.error


def test_the_configured_max_pixels_is_the_limit_that_applies(big_photos, tmp_path):
    # lower than Pillow's own default (89.5 MP): ours refuses the 101.8 MP photo
    with pytest.raises(DecodeError, match="scan.max_pixels = 50 MP"):
        decode_photo(big_photos["medium_format"], max_pixels=50_000_000)
    # between the two photos: the 101.8 MP one is tagged, the 144 MP one refused
    assert decode_photo(big_photos["medium_format"], max_pixels=120_000_000).width == 11648
    with pytest.raises(DecodeError, match="decompression bomb"):
        decode_photo(big_photos["pano"], max_pixels=120_000_000)
    # the 320 MP file is refused from its header, before a pixel is decoded
    bomb = _png_bomb(tmp_path / "bomb.png", 20000, 16000)
    with pytest.raises(DecodeError, match="decompression bomb"):
        decode_photo(bomb)
    assert Image.MAX_IMAGE_PIXELS is not None  # Pillow's guard is raised, never switched off


def test_similar_to_a_large_photo_file_follows_scan_max_pixels_too(big_photos):
    """`phototag similar FILE` decodes the file as a scan does (Pillow opened it directly before, so
    its own 89.5 MP guard refused the photo that scan had tagged)."""
    from phototag.search import SearchError
    from phototag.search.embeddings import embed_file
    from phototag.tagging.builtin import BuiltinTagger

    vector = embed_file(big_photos["medium_format"], BuiltinTagger(faces=False), max_pixels=300_000_000)
    assert vector.shape == (1280,)
    with pytest.raises(SearchError, match="decompression bomb"):
        embed_file(big_photos["pano"], BuiltinTagger(faces=False), max_pixels=120_000_000)


# ---- link loops -----------------------------------------------------------------------------------


def test_a_file_link_loop_is_skipped_and_links_never_leave_the_root(make_library, tmp_path):
    lib = make_library(PHOTOTAG_SCAN__FOLLOW_SYMLINKS="true")
    assert lib.settings.get("scan.follow_symlinks") is True
    root = tmp_path / "Pictures"
    write_photo(root / "real.jpg", 1)
    os.symlink(root / "b.jpg", root / "a.jpg")  # a -> b -> a
    os.symlink(root / "a.jpg", root / "b.jpg")
    os.symlink(root / "self.jpg", root / "self.jpg")  # a link to itself
    os.symlink(root / "loopdir", root / "loopdir")
    os.symlink(root / "real.jpg", root / "alias.jpg")  # a good link inside the root
    outside = write_photo(tmp_path / "elsewhere" / "secret.jpg", 2)
    os.symlink(outside, root / "outside.jpg")
    os.symlink(outside.parent, root / "outside_dir")

    found = sorted(f.path.name for f in iter_photo_files(root, EXTS, follow_symlinks=True))
    assert found == ["alias.jpg", "real.jpg"]
    report = Pipeline(lib, ColourTagger()).scan([root])
    assert report.failed == 0 and report.new + report.moved + report.unchanged == 2
    with lib.session() as s:
        paths = sorted(p.path for p in s.query(Photo))
    assert all(p.startswith(str(root) + "/") for p in paths)
    assert "secret.jpg" not in " ".join(paths)
    os.symlink(root / "loop_root", root / "loop_root")
    assert list(iter_photo_files(root / "loop_root", EXTS, follow_symlinks=True)) == []


# ---- a truncated HEIC -----------------------------------------------------------------------------


def test_truncated_heic_is_an_error_not_a_tiny_thumbnail(make_library, tmp_path):
    with pytest.raises(DecodeError, match="truncated"):
        decode_photo(TEST_PHOTOS / "broken" / "truncated.heic")
    data = (TEST_PHOTOS / "heic" / "pug.heic").read_bytes()
    for keep in (0.5, 0.9, 0.999):  # an interrupted copy of a real iPhone photo
        cut = tmp_path / f"cut{keep}.heic"
        cut.write_bytes(data[: int(len(data) * keep)])
        with pytest.raises(DecodeError):
            decode_photo(cut)
    for whole in ("pug.heic", "xiaomi.heic", "L_exif_xmp_iptc.heic"):
        assert decode_photo(TEST_PHOTOS / "heic" / whole).width >= 64
    trailer = tmp_path / "trailer.heic"  # bytes after the last box that are not a box: not a cut
    trailer.write_bytes(data + b"\x00\x01\xff\xfe" + b"\x12" * 40)
    assert decode_photo(trailer).width == 4032

    lib = make_library()
    root = tmp_path / "Pictures"
    root.mkdir()
    shutil.copy(TEST_PHOTOS / "broken" / "truncated.heic", root)
    report = Pipeline(lib, ColourTagger()).scan([root])
    assert (report.new, report.failed) == (0, 1)
    with lib.session() as s:
        row = lib.photo_by_path(s, root / "truncated.heic")
        assert row.status == "error" and "truncated" in row.error and row.tagged_run_id is None
        assert lib.photo_tags(s, row.id) == []
