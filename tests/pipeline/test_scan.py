"""`phototag scan` end to end with the built-in model on real photos and a real SQLite file."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from sqlalchemy import func, select

from conftest import TEST_PHOTOS, save_sample
from phototag.db.models import ModelRun, Photo, PhotoTag, Tag
from phototag.pipeline import Pipeline
from phototag.tagging.builtin import BuiltinTagger


@pytest.fixture(scope="module")
def tagger():
    return BuiltinTagger()


def tag_names(lib, path) -> set[str]:
    with lib.session() as s:
        photo = lib.photo_by_path(s, path)
        return {t["name"] for t in lib.photo_tags(s, photo.id)}


def model_work(lib) -> int:
    with lib.session() as s:
        return s.scalar(select(func.coalesce(func.sum(ModelRun.photo_count), 0)))


def test_scan_tags_real_photos_and_rescan_does_no_model_work(library, sample_photos, tmp_path, tagger):
    root = tmp_path / "Pictures"
    shutil.copytree(sample_photos, root)
    report = Pipeline(library, tagger).scan([root])
    assert (report.new, report.failed, report.unchanged) == (6, 0, 0)
    assert {"cat", "animal"} <= tag_names(library, root / "chelsea.jpg")
    coffee = tag_names(library, root / "coffee.jpg")
    assert coffee & {"coffee", "espresso", "cup", "coffee mug", "drink"}, coffee
    assert "person" in tag_names(library, root / "astronaut.jpg")
    assert "cat" not in tag_names(library, root / "rocket.jpg")
    work = model_work(library)
    assert work == 6

    again = Pipeline(library, tagger).scan([root])
    assert (again.new, again.updated, again.unchanged, again.tagged) == (0, 0, 6, 0)
    assert model_work(library) == work  # not a single photo went through the model again


def test_moved_photo_keeps_tags_and_manual_tags_survive_retagging(library, sample_photos, tmp_path, tagger):
    root = tmp_path / "Pictures"
    (root / "2024").mkdir(parents=True)
    shutil.copy(sample_photos / "chelsea.jpg", root / "2024" / "cat.jpg")
    Pipeline(library, tagger).scan([root])
    with library.session() as s:
        photo = library.photo_by_path(s, root / "2024" / "cat.jpg")
        photo_id = photo.id
        library.add_manual_tags(s, photo, ["Mittens"])
    (root / "archive").mkdir()
    os.rename(root / "2024" / "cat.jpg", root / "archive" / "renamed.jpg")
    report = Pipeline(library, tagger).scan([root])
    assert (report.moved, report.new, report.tagged) == (1, 0, 0)
    with library.session() as s:
        moved = library.photo_by_path(s, root / "archive" / "renamed.jpg")
        assert moved.id == photo_id
    assert {"cat", "Mittens"} <= tag_names(library, root / "archive" / "renamed.jpg")

    # new content at the same path: model tags are replaced, the manual tag stays
    save_sample("rocket", root / "archive" / "renamed.jpg")
    report = Pipeline(library, tagger).scan([root])
    assert report.updated == 1
    names = tag_names(library, root / "archive" / "renamed.jpg")
    assert "Mittens" in names and "cat" not in names


def test_bad_files_are_recorded_and_the_scan_finishes(library, sample_photos, tmp_path, tagger):
    root = tmp_path / "Pictures"
    root.mkdir()
    shutil.copy(sample_photos / "chelsea.jpg", root / "good.jpg")
    data = (sample_photos / "coffee.jpg").read_bytes()
    (root / "truncated.jpg").write_bytes(data[: len(data) // 4])
    (root / "empty.jpg").write_bytes(b"")
    (root / "notes.jpg").write_text("this is not a photo")
    shutil.copy(TEST_PHOTOS / "broken" / "corrupted.heic", root / "corrupted.heic")
    report = Pipeline(library, tagger).scan([root])
    assert report.new == 1
    assert report.failed == 4
    errors = dict(report.errors)
    assert "empty" in errors[str(root / "empty.jpg")]
    assert "truncated" in errors[str(root / "truncated.jpg")]
    assert "not an image" in errors[str(root / "notes.jpg")]
    with library.session() as s:
        statuses = dict(s.execute(select(Photo.path, Photo.status)).all())
    assert statuses[str(root / "good.jpg")] == "ok"
    assert statuses[str(root / "empty.jpg")] == "error"
    # unchanged broken files are not retried on every scan
    again = Pipeline(library, tagger).scan([root])
    assert again.failed == 0 and again.unchanged == 5


def test_deleted_photo_is_marked_missing_and_unmounted_root_is_left_alone(library, sample_photos, tmp_path, tagger):
    root = tmp_path / "Pictures"
    shutil.copytree(sample_photos, root)
    Pipeline(library, tagger).scan([root])
    (root / "flower.jpg").unlink()
    report = Pipeline(library, tagger).scan([root])
    assert report.missing == 1
    with library.session() as s:
        assert library.photo_by_path(s, root / "flower.jpg").status == "missing"
        assert s.scalar(select(func.count()).select_from(PhotoTag).join(Photo).where(Photo.path == str(root / "flower.jpg"))) > 0
    shutil.rmtree(root)  # the whole folder is gone (an unmounted drive looks like this)
    report = Pipeline(library, tagger).scan([root])
    assert report.missing == 0 and "folder not found" in report.errors[0][1]
    with library.session() as s:
        assert s.scalar(select(func.count()).select_from(Photo).where(Photo.status == "ok")) == 5


def test_batches_give_the_same_tags_as_single_photos(library, sample_photos, tagger):
    from PIL import Image

    images = [Image.open(p).convert("RGB") for p in sorted(sample_photos.glob("*.jpg"))]
    batched = tagger.predict([tagger.prepare(im) for im in images])
    single = [tagger.predict([tagger.prepare(im)])[0] for im in images]
    for b, s in zip(batched, single):
        assert [t.name for t in b.tags] == [t.name for t in s.tags]
        assert [t.score for t in b.tags] == pytest.approx([t.score for t in s.tags], abs=1e-3)


def run_cli(home, *args, check=True):
    env = dict(os.environ, PHOTOTAG_HOME=str(home))
    proc = subprocess.run([sys.executable, "-m", "phototag", *args], capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"phototag {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def test_cli_scan_search_show_tags_json_contract(tmp_path, sample_photos):
    home = tmp_path / "home"
    root = tmp_path / "Pictures"
    shutil.copytree(sample_photos, root)
    shutil.copy(TEST_PHOTOS / "heic" / "pug.heic", root / "pug.heic")
    scan = run_cli(home, "scan", str(root), "--format", "json")
    summary = json.loads(scan.stdout)
    assert summary["new"] == 7 and summary["failed"] == 0

    hits = json.loads(run_cli(home, "search", "cat", "--format", "json").stdout)
    assert [h["path"] for h in hits] == [str(root / "chelsea.jpg")]
    assert {"name", "score", "source"} <= set(hits[0]["tags"][0])
    assert run_cli(home, "search", "cat", "^animal", check=False).returncode == 1  # nothing: exit 1

    dogs = run_cli(home, "search", "dog").stdout.split()
    assert str(root / "pug.heic") in dogs
    in_2023 = run_cli(home, "search", "taken:2023").stdout.split()
    assert in_2023 == [str(root / "pug.heic")]
    apple = run_cli(home, "search", "camera:iphone").stdout.split()
    assert apple == [str(root / "pug.heic")]

    shown = json.loads(run_cli(home, "show", str(root / "pug.heic"), "--format", "json").stdout)
    assert shown["camera_model"] == "iPhone 13 Pro"
    assert shown["taken_at"] == "2023-02-21T14:33:08"
    assert (shown["width"], shown["height"]) == (4032, 3024)
    assert len(shown["sha256"]) == 64
    assert any(t["name"] == "dog" for t in shown["tags"])

    tags = json.loads(run_cli(home, "tags", "--format", "json").stdout)
    counts = {t["name"]: t["count"] for t in tags}
    assert counts["animal"] >= 2 and counts["cat"] == 1

    missing = run_cli(home, "show", str(root / "nope.jpg"), check=False)
    assert missing.returncode == 2 and "no such file" in " ".join(missing.stderr.split())
    assert "Traceback" not in missing.stderr


def test_a_queued_file_that_fails_while_enqueued_again_stays_queued(library, tmp_path, tagger):
    """A half-copied file fails to decode; the watcher queued it again meanwhile: that row must stay."""
    import datetime as dt

    from phototag.db.models import WorkItem
    from phototag.pipeline import Job

    root = tmp_path / "Pictures"
    root.mkdir()
    claimed = dt.datetime(2026, 1, 1, 12, 0, 0)
    for name, enqueued in (("again.jpg", claimed + dt.timedelta(seconds=1)), ("once.jpg", claimed)):
        (root / name).write_text("still being copied")
        with library.session() as s:
            s.add(WorkItem(path=str(root / name), reason="new", priority=0, attempts=1, enqueued_at=enqueued))
    jobs = [Job(root / n, root, "new", queued_at=claimed) for n in ("again.jpg", "once.jpg")]
    report = Pipeline(library, tagger).process(jobs)
    assert report.failed == 2
    with library.session() as s:
        assert s.scalars(select(WorkItem.path)).all() == [str(root / "again.jpg")]
        assert s.scalar(select(Photo.status).where(Photo.path == str(root / "again.jpg"))) == "error"


def test_two_scans_of_one_library_at_once_cooperate(tmp_path, sample_photos):
    """Issue 10 item 5: two real `phototag scan` processes on one library and one folder, started
    together. Before: one crashed (IntegrityError: UNIQUE constraint failed: photos.path) and the pair
    did 1.5x the model work. Now both finish, every photo is tagged by exactly one of them."""
    root, home = tmp_path / "Pictures", tmp_path / "home"
    n = 0
    for name in ("chelsea", "coffee", "astronaut", "rocket", "china", "flower"):
        for size in (160, 192, 224, 256, 288, 320, 352):
            if n < 40:
                save_sample(name, root / name / f"{name}_{size}.jpg", size=size)
                n += 1
    batch = 4
    cmd = [sys.executable, "-m", "phototag", "--home", str(home), "scan", "--format", "json",
           "--batch-size", str(batch), str(root)]
    first = subprocess.run(cmd[:5] + ["db", "status"], capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr  # the library exists: both scans start on the same footing
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-3000:] for _, err in outs]
    reports = [json.loads(out) for out, _ in outs]

    from phototag.config import load_settings
    from phototag.db.models import WorkItem
    from phototag.library import Library

    lib = Library(load_settings(home, environ={}))
    try:
        with lib.session() as s:
            photos = s.execute(select(Photo.path, Photo.status, Photo.tagged_run_id)).all()
            queued = s.scalar(select(func.count()).select_from(WorkItem))
            tag_rows = s.scalar(select(func.count()).select_from(Tag))
            tag_names_ = s.scalar(select(func.count(func.distinct(Tag.name))))
            pairs = s.execute(select(PhotoTag.photo_id, PhotoTag.tag_id, PhotoTag.source)).all()
            integrity = s.connection().exec_driver_sql("PRAGMA integrity_check").scalar()
        work = model_work(lib)
    finally:
        lib.close()
    assert len(photos) == n and all(p.status == "ok" and p.tagged_run_id for p in photos)
    assert tag_rows == tag_names_ and len(pairs) == len(set(pairs)) and integrity == "ok"
    assert queued == 0  # every claim was settled
    assert work <= n + 2 * batch  # the bound: at most one batch per process done twice
    assert work == n, f"{work - n} photos went through the model twice"
    assert sum(r["new"] for r in reports) == n
    assert all(r["new"] > 0 for r in reports), reports  # they really ran at the same time
    assert all(r["failed"] == 0 for r in reports)
