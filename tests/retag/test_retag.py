"""Re-tagging a real library: only model tags change; manual/imported tags and removals survive;
a killed re-tag resumes to the same result; a dry run writes nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from phototag.retag import service
from phototag.db.models import ModelRun, Photo, PhotoTag, Tag, TagSource, WorkItem
from phototag.tagging.builtin import BuiltinTagger

from .conftest import dump


def tags_of(lib, path) -> dict[str, set[str]]:
    """source → tag names of one photo."""
    with lib.session() as s:
        photo = lib.photo_by_path(s, path)
        out: dict[str, set[str]] = {}
        for t in lib.photo_tags(s, photo.id):
            out.setdefault(t["source"], set()).add(t["name"])
        return out


def all_tags(lib) -> set[tuple]:
    """(path, tag, source, score) of every tag in the library, plus removals."""
    from phototag.db.models import TagRemoval

    with lib.session() as s:
        rows = s.execute(
            select(Photo.path, Tag.name, PhotoTag.source, PhotoTag.score)
            .join(PhotoTag, PhotoTag.photo_id == Photo.id).join(Tag, Tag.id == PhotoTag.tag_id)
        ).all()
        removals = s.execute(select(Photo.path, Tag.name).join(TagRemoval, TagRemoval.photo_id == Photo.id)
                             .join(Tag, Tag.id == TagRemoval.tag_id)).all()
    return {(p, n, src, round(sc or 0.0, 4)) for p, n, src, sc in rows} | {(p, n, "REMOVED", 0.0) for p, n in removals}


XMP_SIDECAR = """<x:xmpmeta xmlns:x="adobe:ns:meta/">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/">
   <dc:subject><rdf:Bag><rdf:li>{keyword}</rdf:li></rdf:Bag></dc:subject>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
"""


@pytest.fixture
def sidecars():
    """Sidecars written next to the shared photos, deleted after the test."""
    written: list[Path] = []
    yield written
    for path in written:
        path.unlink(missing_ok=True)


def add_imported(lib, path, name, sidecars):
    """The user's own keyword, in an XMP sidecar (the pipeline reads it on every pass), imported."""
    sidecar = Path(str(path) + ".xmp")
    sidecars.append(sidecar)
    sidecar.write_text(XMP_SIDECAR.format(keyword=name), encoding="utf-8")
    with lib.session() as s:
        lib.set_imported_tags(s, lib.photo_by_path(s, path), [name])


def test_retag_with_a_second_model_version_keeps_manual_imported_and_removals(scanned, sidecars):
    lib, photos = scanned
    cat = str(photos / "chelsea.jpg")
    before = tags_of(lib, cat)
    assert {"cat", "animal"} <= before["model"]
    with lib.session() as s:
        photo = lib.photo_by_path(s, cat)
        lib.remove_tags(s, photo, ["cat"])  # the user says no; the new version would give it again
        lib.add_manual_tags(s, photo, ["my cat", "Egyptian cat"])
        first_run = photo.tagged_run_id
    add_imported(lib, cat, "holiday 2024", sidecars)

    # version 2: same weights, other settings (fewer classes, stricter categories, a lower class bar)
    v2 = BuiltinTagger(faces=False, top_k=1, min_score=0.05, category_min_score=0.6)
    report = service.retag(lib, [], None, tagger=v2)

    after = tags_of(lib, cat)
    assert after["manual"] == {"my cat", "Egyptian cat"}
    assert after["imported"] == {"holiday 2024"}
    assert "cat" not in after.get("model", set())  # removed stays removed
    assert report.retagged == 12 and not report.failed
    assert report.changed, "a different model version must change some model tags"
    # the report matches what happened in the database, per photo
    for change in report.changed:
        model_now = tags_of(lib, change.path).get("model", set())
        assert set(change.added) <= model_now
        assert not (set(change.removed) & model_now)
    # every photo now points at the new run, which records version 2's settings
    with lib.session() as s:
        runs = set(s.scalars(select(Photo.tagged_run_id)))
        assert len(runs) == 1 and first_run not in runs
        run = s.get(ModelRun, runs.pop())
        assert run.settings["top_k"] == 1 and run.weights_sha256 == v2.weights_sha256
        assert s.scalar(select(func.count()).select_from(WorkItem)) == 0
    assert service.load_session(lib.settings) is None
    # the per-tag counts agree with the per-photo changes
    added = {}
    for change in report.changed:
        for t in change.added:
            added[t] = added.get(t, 0) + 1
    assert added == report.tags_added


def test_retag_by_query_touches_only_matching_photos(scanned):
    lib, photos = scanned
    v2 = BuiltinTagger(faces=False, top_k=1, min_score=0.05, category_min_score=0.6)
    report = service.retag(lib, ["cat"], None, tagger=v2)
    assert report.photos == 2  # chelsea and its mirrored copy
    with lib.session() as s:
        run_ids = dict(s.execute(select(Photo.path, Photo.tagged_run_id)).all())
    retagged = {p for p, r in run_ids.items() if r in report.model_run_ids}
    assert {Path(p).name for p in retagged} == {"chelsea.jpg", "chelsea-b.jpg"}


def test_dry_run_changes_nothing_and_predicts_the_real_run(scanned):
    lib, photos = scanned
    with lib.session() as s:
        lib.remove_tags(s, lib.photo_by_path(s, str(photos / "coffee.jpg")), ["drink"])
    v2 = BuiltinTagger(faces=False, top_k=1, min_score=0.05, category_min_score=0.6)
    lib.close()
    before = dump(lib.settings.db_path)
    lib = type(lib)(lib.settings)
    dry = service.retag(lib, [], None, tagger=v2, dry_run=True)
    lib.close()
    assert dump(lib.settings.db_path) == before
    assert not (lib.settings.home / "retag" / "session.json").exists()
    assert dry.dry_run and dry.changed

    from rich.console import Console

    from phototag.cli import common
    from phototag.cli import retag as retag_cli

    captured = Console(record=True, width=200)
    old_out, old_console = common.out, common.console
    retag_cli.out = retag_cli.console = captured
    try:
        retag_cli.render(dry)
    finally:
        retag_cli.out, retag_cli.console = old_out, old_console
    text = captured.export_text()
    assert "dry run" in text and "would change" in text
    first = dry.changed[0]
    assert Path(first.path).name in text and (first.added or first.removed)[0] in text
    lib = type(lib)(lib.settings)
    real = service.retag(lib, [], None, tagger=v2)
    lib.close()
    assert [c.__dict__ for c in dry.changed] == [c.__dict__ for c in real.changed]
    assert dry.tags_added == real.tags_added and dry.tags_removed == real.tags_removed


def _make_version_2(lib, photos: Path) -> str:
    """A second version of the built-in model made the way a user makes one: corrections, then
    `finetune` (starting from the face-less built-in model the library was scanned with)."""
    from phototag.learn.finetune import finetune

    with lib.session() as s:
        for name in ("coffee", "coffee-b", "rocket", "rocket-b", "china", "china-b", "flower", "flower-b"):
            photo = lib.photo_by_path(s, str(photos / f"{name}.jpg"))
            model_tags = [t["name"] for t in lib.photo_tags(s, photo.id) if t["source"] == "model"]
            lib.remove_tags(s, photo, model_tags[:1])  # the user disagrees with the top tag
    result = finetune(lib, "builtin", tagger=BuiltinTagger(faces=False), epochs=60, held_out=0.0, lr=3e-3)
    lib.settings.set_value("batch_size", 1)
    lib.settings.set_value("decode_workers", 1)
    return result.name


def _cli(home: Path, *args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PHOTOTAG_HOME": str(home)}
    return subprocess.Popen([sys.executable, "-m", "phototag", "--home", str(home), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


def _queued(home: Path) -> int:
    import sqlite3

    conn = sqlite3.connect(home / "phototag.db", timeout=30)
    try:
        return conn.execute("select count(*) from work_queue where reason = 'retag'").fetchone()[0]
    finally:
        conn.close()


@pytest.mark.slow
def test_kill_9_during_retag_then_resume_equals_an_uninterrupted_run(scanned, tmp_path):
    import shutil

    lib, photos = scanned
    with lib.session() as s:
        photo = lib.photo_by_path(s, str(photos / "chelsea.jpg"))
        model_tags = [t["name"] for t in lib.photo_tags(s, photo.id) if t["source"] == "model"]
        unwanted = model_tags[0]  # the user disagrees with the model's top tag
        assert lib.remove_tags(s, photo, [unwanted]) == [unwanted]
        lib.add_manual_tags(s, photo, ["whiskers"])
    version = _make_version_2(lib, photos)
    lib.close()
    home = lib.settings.home
    twin = tmp_path / "twin"
    shutil.copytree(home, twin)

    # uninterrupted (in this process: the same service the command calls)
    from phototag.config import load_settings
    from phototag.library import Library

    twin_lib = Library(load_settings(twin, environ={}))
    try:
        uninterrupted = service.retag(twin_lib, [], version).as_dict()
    finally:
        twin_lib.close()

    # killed mid-way: wait until some photos are done and some are still queued
    proc = _cli(home, "retag", "--model", version, "--format", "json")
    deadline = time.monotonic() + 240
    killed_with = None
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            left = _queued(home)
        except Exception:  # the table is being created/locked: try again
            left = -1
        if 2 <= left <= 10:  # some done, enough left that it cannot finish before the signal lands
            proc.send_signal(signal.SIGKILL)
            killed_with = left
            break
        time.sleep(0.02)
    proc.wait(timeout=60)
    assert killed_with is not None, "the re-tag finished before it could be killed"
    assert proc.returncode == -signal.SIGKILL
    assert (home / "retag" / "session.json").exists()
    assert 0 < _queued(home) <= killed_with

    # the same command again continues (no --resume needed), and reports the whole re-tag
    again = _cli(home, "retag", "--model", version, "--format", "json")
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err.decode()
    resumed = json.loads(out)
    assert resumed["resumed"] is True
    assert resumed["retagged"] < 12  # only what was left

    a, b = Library(load_settings(home, environ={})), Library(load_settings(twin, environ={}))
    try:
        got, want = all_tags(a), all_tags(b)
    finally:
        a.close(), b.close()
    assert uninterrupted["changed"], "version 2 must change tags for this test to mean anything"
    assert got == want
    assert resumed["changed"] == uninterrupted["changed"]
    assert resumed["tags_added"] == uninterrupted["tags_added"]
    assert resumed["tags_removed"] == uninterrupted["tags_removed"]
    assert ("%s" % (photos / "chelsea.jpg"), "whiskers", "manual", 1.0) in got
    assert ("%s" % (photos / "chelsea.jpg"), unwanted, "REMOVED", 0.0) in got
    assert _queued(home) == 0 and not (home / "retag" / "session.json").exists()


def test_resume_without_a_session_and_conflicting_sessions_are_clear_errors(scanned):
    lib, photos = scanned
    with pytest.raises(service.RetagError, match="no unfinished re-tag"):
        service.retag(lib, resume=True)
    service.start_retag(lib, ["cat"], "builtin")  # enqueued, never drained (as after a crash)
    with pytest.raises(service.RetagError, match="--resume"):
        service.start_retag(lib, ["food"], "builtin")
    assert service.abandon_retag(lib) == 2
    assert service.load_session(lib.settings) is None


def test_retag_of_a_photo_whose_name_is_not_utf8(library, tmp_path):
    """The session file and the report hold any file name (undecodable bytes as \\udcXX escapes)."""
    from watch.helpers import ColourTagger, write_photo

    from phototag.pipeline import Pipeline

    root = tmp_path / "Pictures"
    odd = write_photo(Path(os.fsdecode(os.fsencode(root) + b"/\xe9t\xe9.jpg")), 1)
    write_photo(root / "plain.jpg", 2)
    assert Pipeline(library, ColourTagger(), decode_workers=1).scan([root]).new == 2
    rs = service.start_retag(library, [], "colour")
    assert service.load_session(library.settings).paths == rs.paths  # written and read back exactly
    report = service.drain_retag(library, rs, ColourTagger())
    assert report.retagged == 2 and service.load_session(library.settings) is None
    last = json.loads((library.settings.home / "retag" / service.LAST_REPORT_FILE).read_text(encoding="utf-8"))
    assert last["retagged"] == 2 and str(odd) in set(rs.paths.values())
