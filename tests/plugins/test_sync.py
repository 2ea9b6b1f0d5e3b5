"""Two-way sync between the library and XMP sidecars (docs/sync.md), through the real CLI on a real
library: real photos, the built-in model, exiv2 writing and exiftool as "another app" editing the
sidecars (as digiKam, Lightroom or a script would)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import cli, save_sample
from conftest import cli_scan as scan
from phototag_plugin_helpers import exiftool_json, needs_exiftool


pytestmark = needs_exiftool




def tags(home: Path, photo: Path) -> dict[str, str]:
    """tag name → source"""
    data = json.loads(cli(home, "tag", "list", photo, "--format", "json").stdout)
    return {t["name"]: t["source"] for t in data["tags"]}


def removed(home: Path, photo: Path) -> list[str]:
    return json.loads(cli(home, "tag", "list", photo, "--format", "json").stdout)["removed"]


def keywords(sidecar: Path) -> dict[str, list[str]]:
    found = exiftool_json(sidecar, "XMP-digiKam:TagsList", "XMP-dc:Subject")
    as_list = lambda v: v if isinstance(v, list) else [v]  # noqa: E731 - exiftool gives one value bare
    return {"tags": as_list(found.get("XMP-digiKam:TagsList", [])), "subject": as_list(found.get("XMP-dc:Subject", []))}


def exiftool(sidecar: Path, *assignments: str) -> None:
    """Another app edits the sidecar (exiftool writes a new file and renames it over the old one)."""
    subprocess.run(["exiftool", "-q", "-overwrite_original", *assignments, str(sidecar)], check=True)


def model_work(home: Path) -> int:
    con = sqlite3.connect(home / "phototag.db")
    try:
        return con.execute("SELECT coalesce(sum(photo_count), 0) FROM model_runs").fetchone()[0]
    finally:
        con.close()


@pytest.fixture
def synced(tmp_path):
    """(home, cat photo): a library with xmp export on, its photos scanned through the CLI."""
    home = tmp_path / "home"
    folder = tmp_path / "Pictures"
    save_sample("chelsea", folder / "cat.jpg", size=320)
    save_sample("coffee", folder / "coffee.jpg", size=320)
    cli(home, "plugins", "enable", "xmp")
    report = scan(home, folder)
    assert report["new"] == 2 and report["failed"] == 0
    cat = folder / "cat.jpg"
    assert "cat" in tags(home, cat)
    assert "phototag/animal/mammal/cat" in keywords(cat.with_name("cat.jpg.xmp"))["tags"]  # auto-exported
    return home, cat


def test_tag_add_and_remove_write_the_sidecar_at_once_with_auto_export(synced):
    home, cat = synced
    sidecar = cat.with_name("cat.jpg.xmp")
    cli(home, "tag", "add", cat, "Mittens")
    assert "phototag/Mittens" in keywords(sidecar)["tags"]  # not at the next export: now
    cli(home, "tag", "remove", cat, "cat")
    written = keywords(sidecar)
    assert "phototag/animal/mammal/cat" not in written["tags"] and "cat" not in written["subject"]
    assert scan(home, cat.parent)["synced"] == 0  # phototag's own writes are not read back as edits

    cli(home, "config", "set", "export.auto", "false")  # automatic export off: the sidecar waits
    cli(home, "tag", "add", cat, "sofa")
    assert "phototag/sofa" not in keywords(sidecar)["tags"]


def test_a_keyword_another_app_adds_is_read_back_without_the_model(synced):
    home, cat = synced
    sidecar = cat.with_name("cat.jpg.xmp")
    work = model_work(home)
    exiftool(sidecar, "-XMP-dc:Subject+=holiday")
    report = scan(home, cat.parent)
    assert (report["synced"], report["tagged"], report["unchanged"]) == (1, 0, 1)
    assert model_work(home) == work
    assert tags(home, cat)["holiday"] == "imported"
    assert scan(home, cat.parent)["synced"] == 0  # read once

    exiftool(sidecar, "-XMP-dc:Subject-=holiday")  # and taken away again
    assert scan(home, cat.parent)["synced"] == 1
    assert "holiday" not in tags(home, cat)
    assert "cat" in tags(home, cat)  # the model's tags stay as they were


def test_edits_under_phototags_root_are_tag_add_and_tag_remove(synced):
    """digiKam-style edits in phototag's own tree: a tag the user adds there becomes a manual tag, a tag
    phototag wrote that the user deletes is removed (and a re-tag does not give it back)."""
    home, cat = synced
    sidecar = cat.with_name("cat.jpg.xmp")
    assert tags(home, cat)["cat"] == "model"
    exiftool(sidecar, "-XMP-digiKam:TagsList+=phototag/pets/Tom",
             "-XMP-digiKam:TagsList-=phototag/animal/mammal/cat")
    assert scan(home, cat.parent)["synced"] == 1
    now = tags(home, cat)
    assert now["Tom"] == "manual" and "cat" not in now and removed(home, cat) == ["cat"]
    assert "animal" in now  # only what the user deleted goes
    written = keywords(sidecar)  # and the sidecar is rewritten from the library at once
    assert "phototag/pets/Tom" in written["tags"] and "phototag/animal/mammal/cat" not in written["tags"]
    assert scan(home, cat.parent)["synced"] == 0

    # Lightroom deletes in lr:hierarchicalSubject, a flat-keyword app in dc:subject only: removals too
    exiftool(sidecar, "-XMP-lr:HierarchicalSubject-=phototag|animal|mammal")
    scan(home, cat.parent)
    assert "mammal" not in tags(home, cat) and "mammal" in removed(home, cat)
    exiftool(sidecar, "-XMP-dc:Subject-=Tom")
    scan(home, cat.parent)
    assert "Tom" not in tags(home, cat)


def test_a_new_library_takes_the_manual_tags_a_sidecar_records(synced, tmp_path):
    home, cat = synced
    sidecar = cat.with_name("cat.jpg.xmp")
    cli(home, "tag", "add", cat, "Mittens")
    exiftool(sidecar, "-XMP-digiKam:TagsList+=phototag/pets/Tom", "-XMP-dc:Subject+=holiday")

    fresh = tmp_path / "fresh-home"
    cli(fresh, "plugins", "enable", "xmp")
    report = scan(fresh, cat.parent)
    assert report["new"] == 2
    got = tags(fresh, cat)
    # the earlier library's manual tag, the one the user added under phototag's root, the user's keyword
    assert (got["Mittens"], got["Tom"], got["holiday"]) == ("manual", "manual", "imported")
    # what an earlier model wrote is not taken as the user's word: this library's model decides
    assert got["cat"] == "model" and got["animal"] == "model"
    assert scan(fresh, cat.parent)["synced"] == 0


def test_export_never_overwrites_edits_it_has_not_read(synced):
    home, cat = synced
    sidecar = cat.with_name("cat.jpg.xmp")
    exiftool(sidecar, "-XMP-digiKam:TagsList+=phototag/pets/Tom", "-XMP-dc:Subject+=holiday")
    # auto-export would replace phototag's tree (a process of its own: its warnings go to its stderr)
    result = subprocess.run([sys.executable, "-m", "phototag", "--home", str(home), "tag", "add", str(cat), "Mittens"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "phototag/pets/Tom" in keywords(sidecar)["tags"]  # kept, not lost
    assert "phototag scan" in result.stderr  # and the user is told why the sidecar was not written
    scan(home, cat.parent)  # read the edits first, then export
    got = tags(home, cat)
    assert (got["Tom"], got["Mittens"], got["holiday"]) == ("manual", "manual", "imported")
    written = keywords(sidecar)
    assert {"phototag/pets/Tom", "phototag/Mittens"} <= set(written["tags"]) and "holiday" in written["subject"]


def test_a_sidecar_deleted_by_the_user_is_written_again_and_its_keywords_go(synced):
    home, cat = synced
    sidecar = cat.with_name("cat.jpg.xmp")
    exiftool(sidecar, "-XMP-dc:Subject+=holiday")
    scan(home, cat.parent)
    assert "holiday" in tags(home, cat)
    sidecar.unlink()
    assert scan(home, cat.parent)["synced"] == 1
    now = tags(home, cat)
    assert "holiday" not in now and now["cat"] == "model"  # a missing file removes none of phototag's tags
    assert "phototag/animal/mammal/cat" in keywords(sidecar)["tags"]  # written again


def test_a_library_from_before_sidecar_stats_reads_each_sidecar_once(synced):
    """Upgraded libraries have no stored stat (NULL): a photo without a sidecar just records that; one
    with a sidecar is read once (the edits made while phototag could not tell are taken)."""
    home, cat = synced
    coffee = cat.with_name("coffee.jpg")
    cat.with_name("coffee.jpg.xmp").unlink()
    exiftool(cat.with_name("cat.jpg.xmp"), "-XMP-dc:Subject+=holiday")
    con = sqlite3.connect(home / "phototag.db")
    con.execute("UPDATE photos SET sidecar_stat = NULL")
    con.commit()
    con.close()
    cli(home, "config", "set", "export.auto", "false")
    report = scan(home, cat.parent)
    assert (report["synced"], report["unchanged"]) == (1, 1)
    assert tags(home, cat)["holiday"] == "imported" and "holiday" not in tags(home, coffee)
    assert scan(home, cat.parent)["synced"] == 0


def test_the_watcher_reads_a_sidecar_another_app_changes_without_the_model(tmp_path):
    """A real watcher (watchdog, inotify): the create/modify events of a sidecar map to its photo, whose
    keywords are read again; phototag's own sidecar writes cause no further work."""
    from phototag_plugin_helpers import make_home
    from watch.helpers import ColourTagger, model_work as work_of, tag_names, wait_for, watching, write_photo

    from phototag.library import Library

    settings = make_home(tmp_path, {"plugins": {"enabled": ["xmp"]}})
    lib = Library(settings)
    root = tmp_path / "Pictures"
    root.mkdir()

    def stored_stat(photo: Path) -> str | None:
        with lib.session() as session:
            row = lib.photo_by_path(session, photo)
            return None if row is None else row.sidecar_stat

    from phototag.plugins import photos_tagged

    try:  # after each batch the plugins' hooks run, as `phototag watch` wires them (auto-export)
        with watching(lib, ColourTagger(), [root], on_commit=lambda ids: photos_tagged(lib, ids)) as watcher:
            a, b = write_photo(root / "a.jpg", 1), write_photo(root / "b.jpg", 2)
            for photo in (a, b):  # tagged, exported, and the written sidecar's stat recorded
                sidecar = photo.with_name(photo.name + ".xmp")
                wait_for(lambda: sidecar.exists() and stored_stat(photo) == _stat(photo), what=f"{photo.name} exported")
            work = work_of(lib)
            enqueued = watcher.stats.enqueued

            exiftool(a.with_name("a.jpg.xmp"), "-XMP-dc:Subject+=holiday")  # modify an existing sidecar
            wait_for(lambda: "holiday" in tag_names(lib, a), what="the edited sidecar read")
            subprocess.run(["exiftool", "-q", "-XMP-dc:Subject=trip", str(root / "b.xmp")], check=True)  # a new one
            wait_for(lambda: "trip" in tag_names(lib, b), what="the new b.xmp read")
            assert work_of(lib) == work  # no photo went through the model again
            assert "red" in tag_names(lib, a) or "green" in tag_names(lib, a) or "blue" in tag_names(lib, a)

            # phototag's own export (a tag added by hand, auto-export on) is not read back as an edit
            with lib.session() as session:
                photo_id = lib.photo_by_path(session, a).id
                lib.add_manual_tags(session, session.get(type(lib.photo_by_path(session, a)), photo_id), ["sofa"])
            photos_tagged(lib, [photo_id])
            assert "phototag/sofa" in keywords(a.with_name("a.jpg.xmp"))["tags"]
            queued_before = watcher.stats.enqueued
            import time

            time.sleep(watcher.stable_seconds + 2 * 2.0)  # events settled, the root check passed
            assert watcher.stats.enqueued == queued_before, "phototag's own sidecar write was queued as an edit"
            assert queued_before - enqueued == 2  # one read for each sidecar another app changed
    finally:
        lib.close()


def test_a_sidecar_edited_while_the_watcher_was_off_is_read_at_its_start(tmp_path):
    """The start-up catch-up compares the sidecars' stats too, not only the photos' own."""
    from phototag_plugin_helpers import make_home
    from watch.helpers import ColourTagger, model_work as work_of, tag_names, wait_for, watching, write_photo

    from phototag.library import Library

    settings = make_home(tmp_path, {"plugins": {"enabled": ["xmp"]}})
    lib = Library(settings)
    root = tmp_path / "Pictures"
    root.mkdir()
    try:
        a = write_photo(root / "a.jpg", 1)
        with watching(lib, ColourTagger(), [root]):
            wait_for(lambda: bool(tag_names(lib, a)), what="a.jpg tagged")
        work = work_of(lib)
        exiftool(root / "a.xmp", "-XMP-dc:Subject=postcard")  # another app, while no watcher runs
        with watching(lib, ColourTagger(), [root]):
            wait_for(lambda: "postcard" in tag_names(lib, a), what="the sidecar read at start-up")
        assert work_of(lib) == work  # no model work for a keyword
    finally:
        lib.close()


def _stat(photo: Path) -> str:
    from phototag.ingest.keywords import sidecar_stat

    return sidecar_stat(photo)
