"""The digiKam plugin: database mode on databases made by real digiKam 7.9, and (when digiKam is
installed) real digiKam reading phototag's sidecars and opening a database phototag wrote."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import save_sample
from phototag_plugin_helpers import (
    add_photo,
    digikam_tag_paths,
    load_digikam_fixture,
    make_library,  # noqa: F401 - fixture
    model_tag,
)

from phototag.export import ExportError
from phototag.export.service import export_photos
from phototag_plugins.digikam import running_digikam_processes

SCANNED = "digikam4-7.9.0-scanned-sidecars.sql"
EMPTY = "digikam4-7.9.0-empty.sql"

# what the sidecars digiKam scanned for the fixture held (see digikam_fixtures/README.md)
# child before parent: Library.ensure_tags (as of this commit) loses the parent of a child listed
# after its parent in one call — reported to the library owner
CAT_TAGS = ["tabby cat", "cat", "indoor"]
COFFEE_TAGS = ["coffee", "cup"]


def _tree(db: Path, top: str = "phototag") -> set[tuple[str, tuple[str, ...]]]:
    """(tag path, sorted ancestor paths from TagsTree) of every tag under ``top``."""
    conn = sqlite3.connect(db)
    try:
        tags = {i: (p, n) for i, p, n in conn.execute("SELECT id, pid, name FROM Tags")}
        closure: dict[int, set[int]] = {}
        for tag_id, pid in conn.execute("SELECT id, pid FROM TagsTree"):
            closure.setdefault(tag_id, set()).add(pid)
    finally:
        conn.close()

    def path(tag_id: int) -> str:
        names = []
        while tag_id in tags:
            pid, name = tags[tag_id]
            names.append(name)
            tag_id = pid
        return "/".join(reversed(names))

    return {(path(t), tuple(sorted(path(a) if a else "<root>" for a in closure.get(t, ()))))
            for t in tags if path(t).split("/")[0] == top}


def _dump(db: Path) -> str:
    conn = sqlite3.connect(db)
    try:
        return "\n".join(conn.iterdump())
    finally:
        conn.close()


@pytest.fixture
def digikam_setup(make_library, tmp_path):
    """The scanned fixture with phototag's tags taken out again, the same two photos on disk and
    in a phototag library tagged as the sidecars digiKam read said."""
    pics = tmp_path / "pics"
    cat = save_sample("chelsea", pics / "cat.jpg", size=128)
    coffee = save_sample("coffee", pics / "sub" / "coffee.jpg", size=128)
    db = load_digikam_fixture(SCANNED, tmp_path / "digikam" / "digikam4.db", pics)
    digikam_own = {"cat.jpg": digikam_tag_paths(db, "cat.jpg"), "coffee.jpg": digikam_tag_paths(db, "coffee.jpg")}
    digikam_tree = _tree(db)
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("DELETE FROM Tags WHERE pid = 0 AND name = 'phototag'")  # digiKam's triggers drop the subtree
        conn.execute("DELETE FROM ImageTags WHERE tagid NOT IN (SELECT id FROM Tags)")  # (not recursive)
        people = conn.execute("SELECT id FROM Tags WHERE name = 'People' AND pid = 0").fetchone()[0]
        alice = conn.execute("INSERT INTO Tags (pid, name) VALUES (?, 'Alice')", (people,)).lastrowid
        conn.execute("INSERT INTO ImageTags VALUES (1, ?)", (alice,))  # the user's own tag on cat.jpg
    conn.close()
    assert digikam_tag_paths(db, "cat.jpg") == ["People/Alice"]
    lib = make_library({"plugins": {"enabled": ["digikam"], "digikam": {"database": str(db)}}})
    ids = {"cat.jpg": add_photo(lib, cat), "coffee.jpg": add_photo(lib, coffee)}
    model_tag(lib, ids["cat.jpg"], CAT_TAGS)
    model_tag(lib, ids["coffee.jpg"], COFFEE_TAGS)
    return lib, db, ids, digikam_own, digikam_tree


def test_database_mode_builds_the_tree_digikam_itself_built(digikam_setup):
    lib, db, ids, digikam_own, digikam_tree = digikam_setup
    before = _dump(db)
    report = export_photos(lib, None, ["digikam"])
    assert report.counts() == {"written": 2}

    assert digikam_tag_paths(db, "cat.jpg") == sorted(digikam_own["cat.jpg"] + ["People/Alice"])
    assert digikam_tag_paths(db, "coffee.jpg") == digikam_own["coffee.jpg"]
    assert _tree(db) == digikam_tree  # same Tags parents and TagsTree closure as digiKam's own
    backups = list(db.parent.glob("digikam4.db.phototag-*.bak"))
    assert len(backups) == 1 and _dump(backups[0]) == before

    assert export_photos(lib, None, ["digikam"]).counts() == {"unchanged": 2}


def test_retag_removes_stale_digikam_tags_only(digikam_setup):
    lib, db, ids, *_ = digikam_setup
    export_photos(lib, None, ["digikam"])
    model_tag(lib, ids["cat.jpg"], ["dog"])
    report = export_photos(lib, None, ["digikam"])
    assert report.counts() == {"written": 1, "unchanged": 1}
    assert digikam_tag_paths(db, "cat.jpg") == ["People/Alice", "phototag/animal/dog"]
    assert digikam_tag_paths(db, "coffee.jpg") == ["phototag/cup", "phototag/food/coffee"]


def test_refuses_while_digikam_runs(digikam_setup, tmp_path):
    lib, db, *_ = digikam_setup
    before = _dump(db)
    # any process whose name is digikam (prctl PR_SET_NAME = 15 sets what /proc/PID/comm shows)
    proc = subprocess.Popen([sys.executable, "-c", "import ctypes, time; "
                             "ctypes.CDLL(None).prctl(15, b'digikam', 0, 0, 0); time.sleep(30)"])
    try:
        deadline = time.time() + 5
        while proc.pid not in [pid for pid, _ in running_digikam_processes()] and time.time() < deadline:
            time.sleep(0.05)
        with pytest.raises(ExportError, match="digiKam is running"):
            export_photos(lib, None, ["digikam"])
    finally:
        proc.kill()
        proc.wait()
    assert _dump(db) == before
    assert not list(db.parent.glob("*.bak"))


def test_refuses_when_the_database_is_locked(digikam_setup):
    lib, db, *_ = digikam_setup
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(ExportError, match="in use"):
            export_photos(lib, None, ["digikam"])
    finally:
        other.execute("ROLLBACK")
        other.close()


def test_dry_run_and_photos_digikam_does_not_know(digikam_setup, tmp_path):
    lib, db, ids, *_ = digikam_setup
    stranger = save_sample("rocket", tmp_path / "elsewhere" / "rocket.jpg", size=64)
    stranger_id = add_photo(lib, stranger)
    model_tag(lib, stranger_id, ["rocket"])
    before = _dump(db)
    report = export_photos(lib, None, ["digikam"], dry_run=True)
    assert {r.path.rsplit("/", 1)[1]: r.action for r in report.results} == {
        "cat.jpg": "would-write", "coffee.jpg": "would-write", "rocket.jpg": "skipped"}
    assert _dump(db) == before and not list(db.parent.glob("*.bak"))
    report = export_photos(lib, [stranger_id], ["digikam"])
    assert report.results[0].action == "skipped" and "not in the digiKam database" in report.results[0].detail


def test_clear_error_without_a_database_setting(make_library):
    lib = make_library({"plugins": {"enabled": ["digikam"]}})
    with pytest.raises(ExportError, match=r"\[plugins.digikam\] database"):
        export_photos(lib, None, ["digikam"])


def test_photos_in_a_collection_digikam_has_not_scanned_are_skipped(make_library, tmp_path):
    """A collection digiKam has not scanned yet: no image to tag, nothing written but the backup."""
    db = load_digikam_fixture(EMPTY, tmp_path / "dk" / "digikam4.db")
    lib = make_library({"plugins": {"enabled": ["digikam"], "digikam": {"database": str(db.parent)}}})
    photo_id = add_photo(lib, save_sample("coffee", tmp_path / "coffee.jpg", size=64))
    model_tag(lib, photo_id, ["coffee"])
    report = export_photos(lib, None, ["digikam"])
    assert report.results[0].action == "skipped"


def test_collection_locations():
    from phototag_plugins.digikam.database import collection_paths

    assert collection_paths("volumeid:?path=/home/me/Pictures", "/") == [Path("/home/me/Pictures")]
    assert collection_paths("volumeid:?path=%2Fhome%2Fme%2FPictures", "/") == [Path("/home/me/Pictures")]
    assert collection_paths("networkshareid:?mountpath=/mnt/nas&mountpath=/media/nas", "/") == [
        Path("/mnt/nas"), Path("/media/nas")]
    assert collection_paths("volumeid:?uuid=0000-not-mounted", "/photos") == []  # drive not there
    assert collection_paths(None, "/") == []


# ---- real digiKam --------------------------------------------------------------------------------

needs_digikam = pytest.mark.skipif(
    shutil.which("digikam") is None or shutil.which("xvfb-run") is None,
    reason="digiKam and Xvfb are not installed (Debian: apt-get install digikam xvfb)")


def run_digikam(base: Path, db_dir: Path, *, read_sidecars: bool, until, timeout: float = 150) -> None:
    """Start real digiKam under Xvfb on ``db_dir`` until ``until()`` is true (or it times out),
    then stop it and wait for it to be gone."""
    config = base / "config"
    config.mkdir(parents=True, exist_ok=True)
    (config / "digikamrc").write_text(
        "[General Settings]\nVersion=7.9.0\n\n[Album Settings]\nScan At Start=true\n\n"
        f"[Metadata Settings]\nUse XMP Sidecar For Reading={'true' if read_sidecars else 'false'}\n\n"
        f"[Database Settings]\nDatabase Type=QSQLITE\nDatabase Name={db_dir}/\n"
        f"Database Name Thumbnails={db_dir}/\nDatabase Name Face={db_dir}/\nDatabase Name Similarity={db_dir}/\n",
        encoding="utf-8")
    env = {**os.environ, "HOME": str(base), "XDG_CONFIG_HOME": str(config), "XDG_RUNTIME_DIR": str(base / "run"),
           "QTWEBENGINE_DISABLE_SANDBOX": "1", "QTWEBENGINE_CHROMIUM_FLAGS": "--disable-gpu --no-sandbox",
           "LIBGL_ALWAYS_SOFTWARE": "1"}
    log = open(base / "digikam.log", "ab")
    proc = subprocess.Popen(["xvfb-run", "-a", "digikam", "--database-directory", str(db_dir)],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + timeout
        while time.time() < deadline and proc.poll() is None:
            try:
                if until():
                    time.sleep(3)  # let it finish the scan's transaction
                    break
            except sqlite3.Error:
                pass
            time.sleep(1)
        else:
            if proc.poll() is None:
                pytest.fail(f"digiKam did not get there in {timeout}s; see {base / 'digikam.log'}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()
        deadline = time.time() + 20
        while running_digikam_processes() and time.time() < deadline:
            time.sleep(0.5)


def _count(db: Path, sql: str) -> int:
    conn = sqlite3.connect(db, timeout=1)
    try:
        return conn.execute(sql).fetchone()[0]
    finally:
        conn.close()


@pytest.mark.slow
@needs_digikam
def test_real_digikam_reads_phototag_sidecars_and_keeps_database_mode_tags(make_library, tmp_path):
    pics = tmp_path / "pics"
    cat = save_sample("chelsea", pics / "cat.jpg", size=256)
    coffee = save_sample("coffee", pics / "sub" / "coffee.jpg", size=256)
    db_dir = tmp_path / "digikam"
    db = load_digikam_fixture(EMPTY, db_dir / "digikam4.db")  # made by digiKam 7.9; a fresh start also works
    conn = sqlite3.connect(db)
    with conn:  # a collection as digiKam's own "Add collection" records it
        conn.execute("INSERT INTO AlbumRoots (label, status, type, identifier, specificPath) "
                     "VALUES ('pics', 0, 1, ?, '/')", (f"volumeid:?path={pics}",))
    conn.close()
    lib = make_library({"plugins": {"enabled": ["xmp", "digikam"], "digikam": {"database": str(db)}}})
    ids = {"cat.jpg": add_photo(lib, cat), "coffee.jpg": add_photo(lib, coffee)}
    model_tag(lib, ids["cat.jpg"], CAT_TAGS)
    model_tag(lib, ids["coffee.jpg"], COFFEE_TAGS)
    assert export_photos(lib, None, ["xmp"]).counts() == {"written": 2}

    # sidecar mode: digiKam scans the collection and reads the sidecars phototag wrote
    run_digikam(tmp_path / "dk-home", db_dir, read_sidecars=True,
                until=lambda: _count(db, "SELECT count(*) FROM ImageTags") >= 5)
    assert digikam_tag_paths(db, "cat.jpg") == [
        "phototag/animal/cat", "phototag/animal/cat/tabby cat", "phototag/indoor"]
    assert digikam_tag_paths(db, "coffee.jpg") == ["phototag/cup", "phototag/food/coffee"]
    tree_from_sidecars = _tree(db)

    # database mode: a re-tag written straight into the closed database …
    model_tag(lib, ids["cat.jpg"], ["dog"])
    report = export_photos(lib, None, ["digikam"], force=True)
    assert report.counts() == {"written": 2}, report.results
    assert digikam_tag_paths(db, "cat.jpg") == ["phototag/animal/dog"]
    # … is kept by digiKam when it starts on that database and rescans the collection (a new photo
    # shows that the scan ran)
    save_sample("rocket", pics / "rocket.jpg", size=128)
    run_digikam(tmp_path / "dk-home", db_dir, read_sidecars=False,
                until=lambda: _count(db, "SELECT count(*) FROM Images WHERE name = 'rocket.jpg'") == 1)
    assert digikam_tag_paths(db, "cat.jpg") == ["phototag/animal/dog"]
    assert digikam_tag_paths(db, "coffee.jpg") == ["phototag/cup", "phototag/food/coffee"]
    # digiKam's tag tree keeps what it built from the sidecars, less the tags of phototag's that no image
    # uses any more after the re-tag (database mode removes those nodes), and digiKam brings none back
    unused = {"phototag/animal/cat", "phototag/animal/cat/tabby cat", "phototag/indoor"}
    tree = _tree(db)
    assert {t for t in tree_from_sidecars if t[0] not in unused} <= tree
    assert unused & {t[0] for t in tree_from_sidecars} == unused and not unused & {t[0] for t in tree}


def _backups(db: Path) -> list[Path]:
    return sorted(db.parent.glob("digikam4.db.phototag-*.bak"))


def test_backups_only_when_something_changes_and_only_the_newest_are_kept(digikam_setup):
    lib, db, ids, *_ = digikam_setup
    mine = db.with_name("digikam4.db.my-own.bak")
    mine.write_bytes(b"the user's own file beside the database")
    exporter_options = {"database": str(db), "keep_backups": 3}
    from phototag_plugins.digikam import DigikamExporter

    def export(**kwargs):
        return export_photos(lib, None, [DigikamExporter(exporter_options)], **kwargs)

    assert export().counts() == {"written": 2}
    assert len(_backups(db)) == 1
    assert export(force=True).counts() == {"written": 2}  # rewritten, but nothing differs
    assert len(_backups(db)) == 1
    assert export().counts() == {"unchanged": 2}
    assert len(_backups(db)) == 1
    stamps = []
    for n, tags in enumerate((["dog"], ["cat"], ["dog"], ["indoor"], ["cat"])):
        model_tag(lib, ids["cat.jpg"], tags)
        before = _dump(db)
        assert export().counts() == {"written": 1, "unchanged": 1}
        newest = _backups(db)[-1]
        assert _dump(newest) == before  # the newest backup is the database as it was before this run
        stamps.append(newest.name)
    assert [p.name for p in _backups(db)] == stamps[-3:]
    assert mine.read_bytes() == b"the user's own file beside the database"

    with pytest.raises(ExportError, match="keep_backups must be a whole number of at least 1, not 0"):
        DigikamExporter({"database": str(db), "keep_backups": 0})


def test_tags_no_image_uses_any_more_leave_the_tree_but_the_users_stay(digikam_setup):
    lib, db, ids, *_ = digikam_setup
    export_photos(lib, None, ["digikam"])
    conn = sqlite3.connect(db)
    with conn:
        root = conn.execute("SELECT id FROM Tags WHERE pid = 0 AND name = 'phototag'").fetchone()[0]
        starred = conn.execute("INSERT INTO Tags (pid, name, iconkde) VALUES (?, 'starred', 'emblem-favorite')",
                               (root,)).lastrowid  # the user gave a node under our root an icon
        conn.execute("INSERT INTO Tags (pid, name) VALUES (0, 'Holidays')")  # the user's own, unused
    conn.close()
    assert {p for p, _ in _tree(db)} >= {"phototag/animal/cat/tabby cat", "phototag/indoor"}

    model_tag(lib, ids["cat.jpg"], ["dog"])  # the cat photo loses tabby cat, cat and indoor
    assert export_photos(lib, None, ["digikam"]).counts() == {"written": 1, "unchanged": 1}
    assert {p for p, _ in _tree(db)} == {
        "phototag", "phototag/animal", "phototag/animal/dog", "phototag/cup", "phototag/food",
        "phototag/food/coffee", "phototag/starred"}
    for path, ancestors in _tree(db):  # digiKam's TagsTree still lists exactly each tag's ancestors
        parts = path.split("/")
        assert ancestors == tuple(sorted(["<root>", *("/".join(parts[:d]) for d in range(1, len(parts)))]))
    conn = sqlite3.connect(db)
    try:
        orphans = conn.execute("SELECT count(*) FROM TagsTree WHERE id NOT IN (SELECT id FROM Tags)").fetchone()[0]
        names = {n for (n,) in conn.execute("SELECT name FROM Tags WHERE pid = 0")}
        assert conn.execute("SELECT iconkde FROM Tags WHERE id = ?", (starred,)).fetchone() == ("emblem-favorite",)
    finally:
        conn.close()
    assert orphans == 0
    assert {"Holidays", "People", "phototag"} <= names
    assert digikam_tag_paths(db, "cat.jpg") == ["People/Alice", "phototag/animal/dog"]


def test_a_slash_in_a_tag_name_stays_one_digikam_tag(digikam_setup):
    from phototag.db.models import Photo

    lib, db, ids, *_ = digikam_setup
    with lib.session() as session:
        lib.add_manual_tags(session, session.get(Photo, ids["coffee.jpg"]), ["AC/DC"])
    export_photos(lib, None, ["digikam"])
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute("SELECT t.name, p.name FROM Tags t JOIN Tags p ON p.id = t.pid "
                            "WHERE t.name LIKE 'AC%'").fetchall()
    finally:
        conn.close()
    assert rows == [("AC\u2215DC", "phototag")]
    assert export_photos(lib, None, ["digikam"]).counts() == {"unchanged": 2}
