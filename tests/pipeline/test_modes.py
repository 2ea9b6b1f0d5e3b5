"""The pipeline's two modes: threaded (decode pool, writer thread) and sequential (the same stages in
the calling thread, for tests) store the same library from the same real photos."""

from __future__ import annotations

import shutil
import threading

import pytest
from sqlalchemy import select

from conftest import TEST_PHOTOS
from phototag.db.models import Photo
from phototag.pipeline import Pipeline
from phototag.tagging.builtin import BuiltinTagger

COLUMNS = ("status", "error", "sha256", "size", "width", "height", "format", "taken_at", "taken_at_offset",
           "camera_make", "camera_model", "lens", "iso", "exposure_time", "f_number", "focal_length", "gps_lat",
           "gps_lon", "orientation")


@pytest.fixture(scope="module")
def tagger():
    return BuiltinTagger(faces=False)


@pytest.fixture
def pictures(tmp_path, sample_photos):
    """The six scikit-image/scikit-learn photos and every file of ../shared/test-photos (phone HEICs,
    maker JPEGs, rotated JPEGs, a TIFF, a WebP and two broken HEICs)."""
    root = tmp_path / "Pictures"
    shutil.copytree(sample_photos, root / "samples")
    for path in TEST_PHOTOS.rglob("*"):
        if path.is_file() and path.suffix != ".md":
            target = root / path.relative_to(TEST_PHOTOS)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
    return root


def library_contents(lib, root) -> dict:
    """Every photo (relative path → its stored columns and its tags with source and score)."""
    contents = {}
    with lib.session() as s:
        for photo in s.scalars(select(Photo)):
            tags = sorted((t["name"], t["source"], t["score"]) for t in lib.photo_tags(s, photo.id))
            contents[str(photo.path).removeprefix(str(root) + "/")] = (
                {c: getattr(photo, c) for c in COLUMNS}, tags)
    return contents


def scan(home, root, tagger, **kwargs):
    from phototag.config import load_settings
    from phototag.library import Library

    lib = Library(load_settings(home, environ={}))
    threads = set()
    progress = []

    def on_progress(event, n):
        threads.add(threading.current_thread().name)
        progress.append((event, n))

    try:
        report = Pipeline(lib, tagger, batch_size=4, progress=on_progress, **kwargs).scan([root])
        again = Pipeline(lib, tagger, batch_size=4, **kwargs).scan([root])
        return report, again, library_contents(lib, root), threads, progress
    finally:
        lib.close()


def test_sequential_and_threaded_scans_store_the_same_library(tmp_path, pictures, tagger):
    threaded = scan(tmp_path / "threaded", pictures, tagger, decode_workers=2)
    sequential = scan(tmp_path / "sequential", pictures, tagger, sequential=True)

    (t_report, t_again, t_lib, t_threads, t_progress), (s_report, s_again, s_lib, s_threads, s_progress) = threaded, sequential
    files = sum(1 for p in pictures.rglob("*") if p.is_file())
    assert (s_report.new, s_report.failed) == (files - 2, 2)  # the two broken HEICs are recorded errors
    for name in ("new", "updated", "unchanged", "moved", "failed", "missing", "tagged", "copied", "synced"):
        assert getattr(s_report, name) == getattr(t_report, name), name
    assert sorted(s_report.errors) == sorted(t_report.errors)
    assert s_again.unchanged == t_again.unchanged == files and s_again.tagged == t_again.tagged == 0

    assert s_lib.keys() == t_lib.keys() and len(s_lib) == files
    for path in s_lib:
        (s_columns, s_tags), (t_columns, t_tags) = s_lib[path], t_lib[path]
        assert s_columns == t_columns, path
        # batches are composed differently in the two modes: scores agree to float precision
        assert [t[:2] for t in s_tags] == [t[:2] for t in t_tags], path
        assert [t[2] for t in s_tags] == pytest.approx([t[2] for t in t_tags], abs=1e-5), path
    assert s_lib["samples/chelsea.jpg"][1] and s_lib["heic/L_exif_xmp_iptc.heic"][0]["camera_model"] == "ILCE-7SM3"

    # the sequential run did everything in the calling thread; the threaded one stored from its writer
    assert s_threads == {threading.current_thread().name}
    assert "phototag-writer" in t_threads
    assert sum(n for e, n in s_progress if e == "advance") == sum(n for e, n in t_progress if e == "advance") == files


def test_sequential_mode_stops_when_asked_and_stores_what_it_decoded(tmp_path, pictures, tagger, library):
    """The stop event ends a sequential run after the batch in progress, as in the threaded mode."""
    stop = threading.Event()
    stored = []

    def on_commit(ids):
        stored.extend(ids)
        stop.set()

    report = Pipeline(library, tagger, batch_size=4, sequential=True, stop_event=stop,
                      on_commit=on_commit).scan([pictures / "samples"])
    assert report.new == len(stored) == 4 and stop.is_set()
