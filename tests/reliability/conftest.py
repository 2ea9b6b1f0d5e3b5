"""Fixtures for the reliability soak: a small real photo set and a read-only view of a library database.

The photo set mixes recognisable photos (scikit-image / scikit-learn samples, each saved with its own
size, crop, brightness and JPEG quality so that no two files share content), real camera files from
../shared/test-photos, broken files that must end as recorded errors, and odd file names (a name that is
not valid UTF-8, spaces, an emoji, a leading dash).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import TEST_PHOTOS
from phototag.db.models import decode_path

SAMPLES = ("chelsea", "coffee", "astronaut", "rocket", "china", "flower")
#: real camera/phone files (small ones: the soak is about kills, not decode speed)
SHARED = ("jpeg/flower.jpg", "jpeg/xmp_test.jpg", "jpeg/iptc.jpg", "orientation/hopper_orientation_6.jpg",
          "makers/r_canon.jpg", "heic/L_exif_xmp_iptc.heic")
#: files that must end as recorded error photos (never tagged, never retried forever, never lost)
BROKEN = ("broken/corrupted.heic", "broken/truncated.heic")
NON_UTF8 = os.fsdecode(b"latin1_\xe9t\xe9.jpg")  # a Latin-1 name from an old archive: not valid UTF-8


@dataclass
class PhotoSet:
    """Every file of the soak under its relative name (``os.fsdecode`` form), in ``staging``."""

    staging: Path
    initial: list[str] = field(default_factory=list)  # in the library folder before the first run
    arrivals: list[str] = field(default_factory=list)  # copied in during the soak (watch bursts)
    errors: set[str] = field(default_factory=set)  # must end as recorded errors

    @property
    def names(self) -> list[str]:
        return self.initial + self.arrivals

    def source(self, name: str) -> Path:
        return self.staging / name

    @property
    def good(self) -> list[str]:
        """The photos that tag normally (what a user copies around most)."""
        return [n for n in self.names if n.endswith(".jpg") and n not in self.errors and "/" in n]

    def place(self, name: str, root: Path, as_name: str | None = None) -> Path:
        dest = root / (as_name or name)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(self.content(name, as_name))
        return dest

    def content(self, name: str, as_name: str | None = None) -> bytes:
        """The file's bytes; placed under another name (a second copy of a JPEG), with a JPEG comment
        naming the copy: the same pixels, but its own content hash, so that it is a photo the model
        tags (a byte-identical copy is given its twin's tags without model work, which would blur the
        count of model work per photo that proves nothing was tagged twice)."""
        data = self.source(name).read_bytes()
        if as_name is None or as_name == name:
            return data
        assert data[:2] == b"\xff\xd8", f"{name}: copies are made of JPEGs only"
        comment = f"copy {as_name}".encode()
        return data[:2] + b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment + data[2:]


def _variant(array, i: int):
    """A distinct photo made from a sample: its own size, crop, brightness and mirror."""
    from PIL import Image, ImageEnhance, ImageOps

    img = Image.fromarray(array).convert("RGB")
    w, h = img.size
    cut = 0.04 * (i % 4)
    img = img.crop((int(w * cut), int(h * cut / 2), w - int(w * cut / 2), h - int(h * cut)))
    img.thumbnail((260 + 37 * (i % 6), 260 + 37 * (i % 6)))
    img = ImageEnhance.Brightness(img).enhance(0.86 + 0.07 * (i % 5))
    return ImageOps.mirror(img) if i % 2 else img


def _sample_array(name: str):
    if name in ("china", "flower"):
        from sklearn.datasets import load_sample_images

        data = load_sample_images()
        return data.images[[Path(f).stem for f in data.filenames].index(name)]
    from skimage import data as skdata

    return getattr(skdata, name)()


@pytest.fixture(scope="session")
def soak_photos(tmp_path_factory) -> PhotoSet:
    return make_photo_set(tmp_path_factory.mktemp("soak-photos"))


def make_photo_set(staging: Path) -> PhotoSet:
    """32 files: 24 sample variants (3 of them oddly named), 6 real camera files, 4 broken files."""
    photos = PhotoSet(staging)
    arrays = {name: _sample_array(name) for name in SAMPLES}
    variants = []
    for i in range(24):
        sample = SAMPLES[i % len(SAMPLES)]
        folder = ("2019/summer", "2020", "phone/DCIM", "")[i % 4]
        name = f"{folder}/{sample}_{i:02d}.jpg".lstrip("/")
        if i == 5:
            name = NON_UTF8
        elif i == 9:
            name = "2020/Ferien am Meer 🏖.jpg"
        elif i == 14:
            name = "phone/DCIM/-1 copy.jpg"
        dest = staging / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        _variant(arrays[sample], i).save(dest, quality=80 + i % 15)
        variants.append(name)
    shared = []
    for rel in SHARED + BROKEN:
        name = f"camera/{rel.replace('/', '_')}"
        (staging / "camera").mkdir(exist_ok=True)
        shutil.copyfile(TEST_PHOTOS / rel, staging / name)
        shared.append(name)
        if rel in BROKEN:
            photos.errors.add(name)
    # broken files a user really has: a JPEG cut short by a failed copy, an empty file
    whole = (staging / variants[1]).read_bytes()
    (staging / "2020/cut_short.jpg").write_bytes(whole[: len(whole) // 3])
    (staging / "2020/empty.jpg").write_bytes(b"")
    photos.errors |= {"2020/cut_short.jpg", "2020/empty.jpg"}
    everything = variants + shared + ["2020/cut_short.jpg", "2020/empty.jpg"]
    # ~40 % there before the first run (with the odd name and a broken file among them), the rest arrives
    first = set(variants[:9] + shared[:3] + [shared[-2], "2020/empty.jpg"])
    photos.initial = [n for n in everything if n in first]
    photos.arrivals = [n for n in everything if n not in first]
    return photos


# ---- a read-only view of a library database ---------------------------------------------------------


def connect_ro(home: Path) -> sqlite3.Connection | None:
    """A read-only connection (``mode=ro``: it never checkpoints or writes what a killed process left)."""
    db = home / "phototag.db"
    if not db.exists():
        return None
    con = sqlite3.connect(db.as_uri() + "?mode=ro", uri=True, timeout=10)
    return con


def progress(home: Path, pid: int | None = None) -> dict[str, int] | None:
    """Counters a poller needs, or None while the library does not exist yet (or is being created).
    With ``pid``: ``owned``, the work-queue rows that process holds a claim on (``owner`` is
    "host:pid:start")."""
    try:
        con = connect_ro(home)
        if con is None:
            return None
        try:
            one = lambda sql: con.execute(sql).fetchone()[0] or 0  # noqa: E731
            counts = {
                "photos": one("SELECT count(*) FROM photos"),
                "tagged": one("SELECT count(*) FROM photos WHERE tagged_run_id IS NOT NULL"),
                "errors": one("SELECT count(*) FROM photos WHERE status = 'error'"),
                "model_work": one("SELECT sum(photo_count) FROM model_runs"),
                "queued": one("SELECT count(*) FROM work_queue"),
            }
            if pid is not None:
                counts["owned"] = con.execute("SELECT count(*) FROM work_queue WHERE owner LIKE ?",
                                              (f"%:{pid}:%",)).fetchone()[0]
            return counts
        finally:
            con.close()
    except sqlite3.Error:  # no tables yet, or the writer is mid-recovery: ask again
        return None


def integrity(home: Path) -> str:
    con = connect_ro(home)
    if con is None:
        return "ok"  # nothing created yet
    try:
        return "; ".join(r[0] for r in con.execute("PRAGMA integrity_check").fetchall())
    finally:
        con.close()


@dataclass
class LibraryState:
    """What a library says about each photo (keyed by its path, as ``os.fsdecode`` gives it) plus
    whole-database checks."""

    photos: dict[str, dict]
    path_rows: int  # photos rows (more than len(photos) = one path stored twice)
    duplicate_photo_tags: int  # (photo, tag, source) rows beyond the first
    duplicate_tag_names: int
    model_work: int  # predictions stored by model runs: a photo tagged twice counts twice
    queue: list[tuple[str, int]]  # (stored path, attempts) still queued
    integrity: str
    thresholds: tuple[float, ...]  # the model's decision boundaries (the scores a tag needs)


def decision_thresholds(settings: dict) -> set[float]:
    """The scores at which the built-in model gives or withholds a tag (from a model run's settings)."""
    values = [settings.get("min_score"), settings.get("category_min_score")]
    fitted = settings.get("thresholds") or {}
    values += [fitted.get("class"), fitted.get("category"), *(fitted.get("tags") or {}).values()]
    return {float(v) for v in values if isinstance(v, (int, float))}


def library_state(home: Path) -> LibraryState:
    con = connect_ro(home)
    assert con is not None, f"no library in {home}"
    try:
        photos: dict[str, dict] = {}
        for pid, path, status, error, run in con.execute(
                "SELECT id, path, status, error, tagged_run_id FROM photos"):
            photos[decode_path(path)] = {"id": pid, "status": status, "error": error, "tagged": run is not None,
                                         "tags": {}}
        by_id = {p["id"]: p for p in photos.values()}
        for pid, name, score in con.execute(
                "SELECT pt.photo_id, t.name, pt.score FROM photo_tags pt JOIN tags t ON t.id = pt.tag_id"):
            by_id[pid]["tags"][name] = score
        one = lambda sql: con.execute(sql).fetchone()[0] or 0  # noqa: E731
        thresholds: set[float] = set()
        for (settings,) in con.execute("SELECT settings FROM model_runs"):
            thresholds |= decision_thresholds(json.loads(settings or "{}"))
        return LibraryState(
            photos=photos,
            path_rows=one("SELECT count(*) FROM photos"),
            duplicate_photo_tags=one("SELECT sum(n - 1) FROM (SELECT count(*) AS n FROM photo_tags "
                                     "GROUP BY photo_id, tag_id, source HAVING n > 1)"),
            duplicate_tag_names=one("SELECT sum(n - 1) FROM (SELECT count(*) AS n FROM tags "
                                    "GROUP BY name HAVING n > 1)"),
            model_work=one("SELECT sum(photo_count) FROM model_runs"),
            queue=con.execute("SELECT path, attempts FROM work_queue").fetchall(),
            integrity="; ".join(r[0] for r in con.execute("PRAGMA integrity_check").fetchall()),
            thresholds=tuple(sorted(thresholds)),
        )
    finally:
        con.close()
