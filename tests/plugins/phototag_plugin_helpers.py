"""Helpers shared by the plugin tests: a library with real photos tagged through the real write API,
exiftool as an independent reader, and digiKam databases from the fixtures made by real digiKam."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sqlite3
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Mapping, Sequence

import pytest

from phototag.config import dump_toml, load_settings, use_settings
from phototag.db.models import Photo, PhotoTag, TagSource
from phototag.library import Library, PhotoFacts
from phototag.plugins import reset_plugins
from phototag.tagging.base import Prediction, Tagger, TagScore

HERE = Path(__file__).resolve().parent
DIGIKAM_FIXTURES = HERE / "digikam_fixtures"

#: a small tag hierarchy like RAM's (child → parent)
PARENTS = {"tabby cat": "cat", "cat": "animal", "dog": "animal", "coffee": "food", "espresso": "coffee"}
NAMES_ZH = {"animal": "动物", "cat": "猫", "tabby cat": "虎斑猫", "dog": "狗", "food": "食物", "coffee": "咖啡"}

needs_exiftool = pytest.mark.skipif(shutil.which("exiftool") is None,
                                    reason="exiftool (Debian: libimage-exiftool-perl) is not installed")


class DictTagger(Tagger):
    """A tagger whose 'model' is a dict path → tags: the real store path, without weights."""

    name = "dict"
    model_id = "test/dict"

    def __init__(self, tags_by_path: Mapping[str, Sequence[str]]):
        self.tags_by_path = {str(k): list(v) for k, v in tags_by_path.items()}

    @property
    def weights_sha256(self) -> str:
        return "0" * 64

    def tag_parents(self):
        return PARENTS

    def tag_names_zh(self):
        return NAMES_ZH

    def prepare(self, image):
        return image

    def predict(self, batch):
        return [Prediction(tags=[TagScore(n, 0.9) for n in self.tags_by_path[p]]) for p in batch]


def make_home(tmp_path: Path, config: dict | None = None):
    """A library home whose config.toml holds ``config``; made the process-wide settings."""
    home = tmp_path / "home"
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(dump_toml(config or {}), encoding="utf-8")
    settings = load_settings(home, environ={})
    use_settings(settings)
    reset_plugins()
    return settings


def add_photo(lib: Library, path: Path) -> int:
    data = path.read_bytes()
    with lib.session() as session:
        photo = lib.upsert_photo(session, PhotoFacts(
            path=path.resolve(), root=path.parent.resolve(), size=len(data), mtime=path.stat().st_mtime,
            sha256=hashlib.sha256(data).hexdigest(), format="JPEG"))
        return photo.id


def model_tag(lib: Library, photo_id: int, names: Sequence[str]) -> None:
    """Store a model prediction (replaces the photo's previous model tags, as a re-tag does)."""
    with lib.session() as session:
        photo = session.get(Photo, photo_id)
        tagger = DictTagger({photo.path: names})
        run = lib.start_model_run(session, tagger)
        lib.store_prediction(session, photo, run, tagger, tagger.predict([photo.path])[0])


def import_tags(lib: Library, photo_id: int, paths: Sequence[str]) -> None:
    """Store the user's own keywords as ``imported`` tags, hierarchy from their ``/`` paths."""
    with lib.session() as session:
        for path in paths:
            parts = path.split("/")
            parents = {parts[i]: parts[i - 1] for i in range(1, len(parts))}
            ids = lib.ensure_tags(session, [parts[-1]], parents)
            session.add(PhotoTag(photo_id=photo_id, tag_id=ids[parts[-1]], source=TagSource.imported.value))


def exiftool_json(path: Path, *tags: str) -> dict:
    out = subprocess.run(["exiftool", "-j", "-G1", "-struct", *[f"-{t}" for t in tags], str(path)],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)[0]


def exiftool_xml(path: Path) -> ET.Element:
    out = subprocess.run(["exiftool", "-X", "-struct", "-a", str(path)], check=True, capture_output=True).stdout
    return ET.fromstring(out)


RDF = "{http://www.w3.org/1999/02/22-rdf-syntax-ns#}"


def list_type(path: Path, prop: str) -> tuple[str, list[str]]:
    """('Seq' | 'Bag', items) of one XMP list property (``digiKam:TagsList``) as exiftool reads it
    (its verbose mode names the RDF container of every item)."""
    lines = subprocess.run(["exiftool", "-v2", str(path)], check=True, capture_output=True,
                           text=True).stdout.splitlines()
    pattern = re.compile(r"- Tag '.*/" + re.escape(prop) + r"/rdf:(Seq|Bag|Alt)/rdf:li \d+'")
    kinds = {m.group(1) for m in map(pattern.search, lines) if m}
    assert len(kinds) == 1, f"{prop} in {path}: containers {kinds}"
    prefix, local = prop.split(":")
    name = f"XMP-{prefix}:{local[0].upper()}{local[1:]}"
    items = exiftool_json(path, name.split(":")[1]).get(name)  # values read without -v's escaping
    return kinds.pop(), items if isinstance(items, list) else [items]


def load_digikam_fixture(name: str, db_path: Path, collection: Path | None = None) -> Path:
    """Build ``digikam4.db`` from a dump of a database real digiKam 7.9 made; point its collection
    (AlbumRoots) at ``collection``."""
    sql = (DIGIKAM_FIXTURES / name).read_text(encoding="utf-8")
    db_path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(db_path)
    conn.executescript(sql)
    if collection is not None:
        conn.execute("UPDATE AlbumRoots SET identifier = ? WHERE id = 1",
                     (f"volumeid:?path={collection.resolve()}",))
    conn.commit()
    conn.close()
    return db_path


def digikam_tag_paths(db_path: Path, image_name: str) -> list[str]:
    conn = sqlite3.connect(db_path)
    try:
        tags = {i: (p, n) for i, p, n in conn.execute("SELECT id, pid, name FROM Tags")}
        rows = conn.execute("SELECT tagid FROM ImageTags JOIN Images ON Images.id = ImageTags.imageid "
                            "WHERE Images.name = ?", (image_name,)).fetchall()
    finally:
        conn.close()
    paths = []
    for (tag_id,) in rows:
        names = []
        while tag_id in tags:
            pid, name = tags[tag_id]
            names.append(name)
            tag_id = pid
        paths.append("/".join(reversed(names)))
    return sorted(paths)


@pytest.fixture
def make_library(tmp_path):
    """make_library(config) → Library in a fresh home with that config.toml; closed afterwards."""
    libraries: list[Library] = []

    def make(config: dict | None = None) -> Library:
        settings = make_home(tmp_path, config)
        lib = Library(settings)
        libraries.append(lib)
        return lib

    yield make
    for lib in libraries:
        lib.close()
    use_settings(None)
    reset_plugins()
