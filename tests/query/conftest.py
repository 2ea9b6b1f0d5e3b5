"""A real library with 16 photos covering every query field (built once per module), on both
databases: a SQLite file and a fresh PostgreSQL database (tests/pg.py), so every test that takes
``library_db`` checks the SQL face on both."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import time

import pytest
from pg import pg_database, require_server

from phototag.db.models import Caption, ModelRun, Photo, PhotoTag, Tag

#: the clock every query in these tests is parsed with (relative dates)
NOW = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.timezone.utc)
NAIVE_NOW = NOW.replace(tzinfo=None)


def set_tz(name: str | None) -> None:
    if name is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = name
    time.tzset()


@pytest.fixture(autouse=True, scope="session")
def utc_local_time():
    """Local time = UTC while these tests run, so date bounds do not depend on the machine."""
    old = os.environ.get("TZ")
    set_tz("UTC")
    yield
    set_tz(old)


TAGS = {  # name: (name_zh, parent)
    "animal": ("动物", None),
    "dog": ("狗", "animal"),
    "cat": ("猫", "animal"),
    "tabby cat": ("虎斑猫", "cat"),
    "beach": ("海滩", None),
    "sky": ("天空", None),
    "tree": ("树", None),
    "car": ("汽车", None),
    "yin": (None, "yang"),  # a cycle: yin → yang → yin
    "yang": (None, "yin"),
}

RUNS = {"builtin": "builtin/efficientnet-lite0", "ram_plus": "ram_plus/swin_l_14m"}


def d(*args: int) -> dt.datetime:
    return dt.datetime(*args)


#: key → photo columns, tags [(name, source, score, run)], captions
PHOTOS: dict[str, dict] = {
    "dog_beach": dict(
        path="/lib/2019/dog_beach.jpg", taken_at=d(2019, 7, 4, 10), camera_make="FUJIFILM",
        camera_model="X100V", lens="23mm F2", iso=200, width=6000, height=4000, format="JPEG",
        added_at=d(2024, 1, 10, 9), tags=[("dog", "model", 0.95, "builtin"), ("beach", "model", 0.7, "builtin")],
        captions=["a dog running on the beach"],
    ),
    "cat_sofa": dict(
        path="/lib/2019/cat_sofa.jpg", taken_at=d(2019, 12, 31, 23, 59, 59), camera_make="Canon",
        camera_model="Canon EOS R5", lens="RF24-105mm F4 L IS USM", iso=1600, width=8192, height=5464,
        format="JPEG", added_at=d(2024, 1, 10, 9, 5),
        tags=[("cat", "model", 0.88, "ram_plus"), ("tabby cat", "model", 0.81, "ram_plus")],
    ),
    "tabby": dict(
        path="/lib/2020/tabby.heic", taken_at=d(2020, 6, 15, 12), camera_make="Apple",
        camera_model="iPhone 12", iso=32, width=4032, height=3024, format="HEIF",
        added_at=d(2024, 3, 1), tags=[("tabby cat", "manual", None, None)],
    ),
    "park": dict(
        path="/lib/2021/06/park.jpg", taken_at=d(2021, 6, 1, 8), camera_make="FUJIFILM",
        camera_model="X-T4", iso=400, width=6240, height=4160, format="JPEG", added_at=d(2024, 3, 2),
        tags=[("dog", "model", 0.55, "ram_plus"), ("tree", "model", 0.9, "ram_plus"), ("sky", "model", 0.6, "ram_plus")],
        captions=["Dog in the park under trees"],
    ),
    "sky": dict(
        path="/lib/2021/06/sky.JPG", taken_at=d(2021, 6, 30, 18), camera_make="FUJIFILM",
        camera_model="X100V", iso=100, width=3000, height=2000, format="JPEG", added_at=d(2024, 3, 3),
        tags=[("sky", "imported", None, None)],
    ),
    "car": dict(
        path="/lib/2021/12/car.png", taken_at=d(2021, 12, 24), width=1024, height=768, format="PNG",
        added_at=d(2024, 3, 4), tags=[("car", "plugin", 0.99, None)],
    ),
    "untagged": dict(
        path="/lib/2022/untagged.jpg", taken_at=d(2022, 2, 2), camera_make="SONY",
        camera_model="ILCE-7M3", iso=6400, width=6000, height=4000, format="JPEG", added_at=d(2024, 3, 5),
    ),
    "dog_manual": dict(
        path="/lib/2022/dog_manual.jpg", width=800, height=600, format="JPEG",
        added_at=NAIVE_NOW - dt.timedelta(days=2), tags=[("dog", "manual", None, None)],
    ),
    "gone_dog": dict(
        path="/lib/missing/gone_dog.jpg", status="missing", taken_at=d(2021, 3, 3), added_at=d(2024, 3, 6),
        tags=[("dog", "model", 0.9, "builtin")],
    ),
    "broken": dict(path="/lib/broken.jpg", status="error", error="cannot decode", added_at=d(2024, 3, 7)),
    "beach_day": dict(
        path="/lib/2023/Beach Day.jpg", taken_at=d(2023, 8, 8, 14), camera_make="Canon",
        camera_model="Canon EOS R5", iso=100 * 8, width=5000, height=3000, format="JPEG",
        added_at=NAIVE_NOW - dt.timedelta(days=10),
        tags=[("beach", "manual", None, None), ("sky", "model", 0.45, "builtin")],
    ),
    "yin": dict(
        path="/lib/2023/yin.jpg", format="JPEG", added_at=d(2024, 3, 8), tags=[("yin", "model", 0.5, "builtin")],
    ),
    "cat_and_dog": dict(
        path="/lib/2024/cat_and_dog.jpg", taken_at=d(2024, 5, 5, 9), format="JPEG",
        added_at=NAIVE_NOW - dt.timedelta(hours=1),
        tags=[("cat", "model", 0.92, "builtin"), ("dog", "model", 0.85, "builtin"), ("animal", "model", 0.99, "builtin")],
    ),
    "weixin": dict(
        path="/lib/2024/微信图片.jpg", taken_at=d(2024, 5, 6), format="JPEG", added_at=d(2024, 5, 7),
        tags=[("cat", "imported", None, None)], captions=["一只猫在睡觉"],
    ),
    "flower": dict(
        path="/lib/2024/extra/flower.jpg", taken_at=d(2024, 12, 31, 23), camera_make="NIKON CORPORATION",
        camera_model="NIKON Z 6", format="JPEG", added_at=d(2025, 1, 1),
    ),
    "ete": dict(
        path="/lib/2024/ÉTÉ.jpg", format="JPEG", added_at=d(2025, 7, 1),
        tags=[("beach", "manual", None, None)], captions=["ÉTÉ à la plage"],
    ),
}

OK = {k for k, v in PHOTOS.items() if v.get("status", "ok") == "ok"}


def build_library(target):
    """The library at ``target``: a SQLite file's path or a database URL."""
    from phototag.db.engine import open_database

    db = open_database(target)
    with db.session() as s:
        tags = {name: Tag(name=name, name_zh=zh) for name, (zh, _parent) in TAGS.items()}
        s.add_all(tags.values())
        s.flush()
        for name, (_zh, parent) in TAGS.items():
            if parent:
                tags[name].parent_id = tags[parent].id
        runs = {n: ModelRun(model_name=n, model_id=mid, weights_sha256="0" * 64) for n, mid in RUNS.items()}
        s.add_all(runs.values())
        s.flush()
        for key, spec in PHOTOS.items():
            spec = dict(spec)
            photo_tags = spec.pop("tags", [])
            captions = spec.pop("captions", [])
            photo = Photo(**spec)
            s.add(photo)
            s.flush()
            for name, source, score, run in photo_tags:
                s.add(PhotoTag(photo_id=photo.id, tag_id=tags[name].id, source=source, score=score,
                               model_run_id=runs[run].id if run else None))
            for i, text in enumerate(captions):
                s.add(Caption(photo_id=photo.id, model_id=f"captioner{i}", text=text))
    return db


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def library_db(request, tmp_path_factory):
    with contextlib.ExitStack() as stack:
        if request.param == "postgresql":
            require_server()
            target = stack.enter_context(pg_database("query"))
        else:
            target = tmp_path_factory.mktemp("query") / "library.db"
        db = build_library(target)
        stack.callback(db.dispose)
        with db.session() as s:
            ids = {p.path: p.id for p in s.query(Photo)}
        db.key_of = {ids[spec["path"]]: key for key, spec in PHOTOS.items()}
        db.id_of = {key: pid for pid, key in db.key_of.items()}
        yield db
