"""A real library (SQLite file, real photos, the real built-in model) scanned once per session and
copied for each test, so each test starts from the same tagged state without re-running the model."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest
from PIL import Image, ImageOps

from conftest import save_sample

SAMPLES = ("chelsea", "coffee", "astronaut", "rocket", "china", "flower")


def make_photos(folder: Path) -> list[Path]:
    """12 real photos: six recognisable ones and a mirrored, cropped copy of each (other content hash)."""
    paths = []
    for name in SAMPLES:
        original = save_sample(name, folder / f"{name}.jpg", size=320)
        with Image.open(original) as img:
            w, h = img.size
            variant = ImageOps.mirror(img.crop((w // 10, h // 10, w - w // 10, h - h // 10)))
            variant.save(folder / f"{name}-b.jpg", quality=90)
        paths += [original, folder / f"{name}-b.jpg"]
    return paths


def dump(db_path: Path) -> list[str]:
    """Every row of the database as SQL text (what `sqlite3 .dump` prints)."""
    conn = sqlite3.connect(db_path)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


@pytest.fixture(scope="session")
def scanned_template(tmp_path_factory):
    """(home, photos folder): every photo scanned with the built-in model (faces off: fast)."""
    from phototag.config import load_settings, use_settings
    from phototag.library import Library
    from phototag.pipeline import Pipeline
    from phototag.tagging.builtin import BuiltinTagger

    base = tmp_path_factory.mktemp("retag-template")
    photos = base / "photos"
    make_photos(photos)
    home = base / "home"
    settings = load_settings(home, environ={})
    (home).mkdir(parents=True, exist_ok=True)
    settings.set_value("batch_size", 4)
    lib = Library(settings)
    try:
        report = Pipeline(lib, BuiltinTagger(faces=False), decode_workers=2).scan([photos])
        assert report.new == 12, report.as_dict()
    finally:
        lib.close()
        use_settings(None)
    return home, photos


@pytest.fixture
def scanned(scanned_template, tmp_path, monkeypatch):
    """A fresh copy of the scanned library; its settings are the process-wide settings."""
    from phototag.config import load_settings, use_settings
    from phototag.library import Library

    template_home, photos = scanned_template
    home = tmp_path / "home"
    shutil.copytree(template_home, home)
    monkeypatch.setenv("PHOTOTAG_HOME", str(home))
    settings = load_settings(home, environ={})
    use_settings(settings)
    lib = Library(settings)
    yield lib, photos
    lib.close()
    use_settings(None)


def faces_off(lib):
    """The built-in model as the template scanned with it (no face detector)."""
    from phototag.tagging.builtin import BuiltinTagger

    return BuiltinTagger(faces=False)
