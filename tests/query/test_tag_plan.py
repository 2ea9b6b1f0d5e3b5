"""Tag terms resolved to ids in Python, and AND groups driven by their rarest tag.

search() looks tag names up in a cached copy of the tags table and lets the rarest tag of each
AND group drive the SQL (phototag/query/tags.py, compile.py). These tests check that the
resolved SQL answers exactly like the unresolved one and like match(), that the rarest tag
really drives, and that the cached copy follows the database.
"""

from __future__ import annotations

import random
import re
import sqlite3

import pytest
from sqlalchemy import select, text

from phototag.db.engine import open_database
from phototag.db.models import Photo, PhotoTag, Tag
from phototag.query import parse, search_ids
from phototag.query.nodes import TagTerm
from phototag.query.view import load_views

from .conftest import NOW
from .test_property import random_query


def test_resolved_and_unresolved_sql_agree_with_match(library_db):
    rnd = random.Random(4585)
    with library_db.session() as s:
        views = load_views(s)
        for _ in range(300):
            words = random_query(rnd)
            query = parse(words, now=NOW)
            by_name = set(s.scalars(select(Photo.id).where(query.where())))
            resolved = query.resolve_tags(s)
            assert all(n.tag_ids is not None for n in resolved.expr.walk() if isinstance(n, TagTerm))
            by_id = set(s.scalars(select(Photo.id).where(resolved.where())))
            py = {pid for pid, v in views.items() if query.match(v)}
            assert by_id == by_name == py, f"{words}: ids {sorted(by_id)}, names {sorted(by_name)}, match {sorted(py)}"


def _library(path, photos: dict[str, list[str]], parents: dict[str, str] | None = None):
    """A library whose photo ``key`` has the tags ``photos[key]``."""
    db = open_database(path)
    names = sorted({t for tags in photos.values() for t in tags} | set(parents or {}) | set((parents or {}).values()))
    with db.session() as s:
        tags = {n: Tag(name=n) for n in names}
        s.add_all(tags.values())
        s.flush()
        for child, parent in (parents or {}).items():
            tags[child].parent_id = tags[parent].id
        for key, tag_names in photos.items():
            photo = Photo(path=f"/lib/{key}.jpg")
            s.add(photo)
            s.flush()
            s.add_all(PhotoTag(photo_id=photo.id, tag_id=tags[n].id, source="model", score=0.9) for n in tag_names)
    return db


def test_the_rarest_tag_drives_and_the_others_are_probed(tmp_path):
    photos = {f"p{i:03d}": ["common"] + (["mid"] if i % 3 == 0 else []) + (["rare"] if i % 30 == 0 else [])
              for i in range(90)}
    db = _library(tmp_path / "lib.db", photos)
    try:
        with db.session() as s:
            ids = dict(s.execute(select(Tag.name, Tag.id)).all())
            query = parse("common mid rare ^nothing", now=NOW).resolve_tags(s)
            rows = {n.matcher.value: n.rows for n in query.expr.walk() if isinstance(n, TagTerm)}
            assert rows == {"common": 90, "mid": 30, "rare": 3, "nothing": 0}
            sql = str(query.statement().compile(db.engine, compile_kwargs={"literal_binds": True}))
            # the outermost photo_tags subquery walks the rare tag; the others are EXISTS probes
            driver = re.search(r"FROM photo_tags AS (\w+)\s+WHERE \1\.tag_id IN \((\d+)\)", sql)
            assert driver and int(driver[2]) == ids["rare"], sql
            assert sql.count("EXISTS") == 2 and "tags.name" not in sql
            plan = " | ".join(r[-1] for r in s.execute(text("EXPLAIN QUERY PLAN " + sql)))
            assert "ix_photo_tags_tag_photo" in plan, plan
            assert search_ids(s, "common mid rare") == [s.scalar(select(Photo.id).where(Photo.path == f"/lib/p{i:03d}.jpg"))
                                                        for i in (0, 30, 60)]
            assert search_ids(s, "rare nothing") == []
            assert len(search_ids(s, "mid ^rare")) == 27
    finally:
        db.dispose()


def test_a_big_tree_travels_as_one_parameter(tmp_path):
    parents = {f"leaf{i:03d}": "root" for i in range(600)}
    db = _library(tmp_path / "lib.db", {"a": ["leaf599"], "b": ["leaf000", "other"], "c": ["other"]}, parents)
    try:
        with db.session() as s:
            query = parse("tag:root/ other", now=NOW).resolve_tags(s)
            compiled = query.statement().compile(db.engine)
            assert len(compiled.params) < 10  # not 600 variables
            assert [p.rsplit("/", 1)[1] for p in s.scalars(select(Photo.path).where(Photo.id.in_(
                search_ids(s, "tag:root/")))).all()] == ["a.jpg", "b.jpg"]
            assert len(search_ids(s, "tag:root/ other")) == 1
            assert len(search_ids(s, "other ^tag:root/")) == 1
    finally:
        db.dispose()


def test_the_cached_tags_follow_the_database(tmp_path):
    db = _library(tmp_path / "lib.db", {"a": ["dog"], "b": ["cat"]})
    try:
        with db.session() as s:
            assert len(search_ids(s, "dog")) == 1 and search_ids(s, "hound") == []
        # renamed by another connection (another process, say)
        con = sqlite3.connect(db.path)
        with con:
            con.execute("UPDATE tags SET name = 'hound' WHERE name = 'dog'")
        con.close()
        with db.session() as s:
            assert search_ids(s, "dog") == [] and len(search_ids(s, "hound")) == 1
        con = sqlite3.connect(db.path)
        with con:  # same length, same count, same ids
            con.execute("UPDATE tags SET name = 'hunds' WHERE name = 'hound'")
        con.close()
        with db.session() as s:
            assert search_ids(s, "hound") == [] and len(search_ids(s, "hunds")) == 1
        # a tag added in this session counts before the commit, and is gone after a rollback
        s = db.sessionmaker()
        try:
            tag = Tag(name="wolf", name_zh="狼")
            s.add(tag)
            s.flush()
            s.add(PhotoTag(photo_id=search_ids(s, "cat")[0], tag_id=tag.id, source="manual"))
            s.execute(text("UPDATE tags SET name = 'kitten' WHERE name = 'cat'"))
            assert len(search_ids(s, "狼")) == 1 and len(search_ids(s, "kitten")) == 1
            assert search_ids(s, "cat") == []
            s.rollback()
            assert search_ids(s, "狼") == [] and search_ids(s, "kitten") == []
            assert len(search_ids(s, "cat")) == 1
        finally:
            s.close()
    finally:
        db.dispose()


@pytest.mark.parametrize("text_", ["dog", "tag:=dog", "tag::^do.$", "tag:=~DOG"])
def test_every_way_of_naming_a_tag_resolves(tmp_path, text_):
    db = _library(tmp_path / "lib.db", {"a": ["dog"], "b": ["dig", "Dog2"]})
    try:
        with db.session() as s:
            assert [p.rsplit("/", 1)[1] for p in s.scalars(select(Photo.path).where(Photo.id.in_(
                search_ids(s, text_))))] == ["a.jpg"]
    finally:
        db.dispose()


def test_a_dense_first_page_walks_the_photos_in_path_order(tmp_path):
    photos = {f"p{i:03d}": ["common"] + (["rare"] if i in (7, 150) else []) + (["half"] if i % 2 else [])
              for i in range(200)}
    db = _library(tmp_path / "lib.db", photos)
    try:
        with db.session() as s:
            def drives(text_: str, first: int | None) -> dict[str, bool]:
                q = parse(text_, now=NOW).resolve_tags(s, first=first)
                return {n.matcher.value: n.drive for n in q.expr.walk() if isinstance(n, TagTerm)}

            assert drives("common", 5) == {"common": False}  # the first 5 photos will do
            assert drives("common", None) == {"common": True}  # all of them: drive
            assert drives("rare", 5) == {"rare": True}
            assert drives("common rare", 5) == {"common": True, "rare": True}
            assert drives("half , common", 5) == {"half": False, "common": False}
            assert drives("common taken:2020", 5) == {"common": True}  # unknown selectivity
            sql = str(parse("common ^half", now=NOW).resolve_tags(s, first=5).statement().compile(db.engine))
            assert "IN (SELECT" not in sql and "NOT (EXISTS" in sql
            everything = search_ids(s, "common")
            assert len(everything) == 200
            assert search_ids(s, "common", limit=5) == everything[:5]
            assert search_ids(s, "common ^half", limit=3) == [i for i in everything if i not in set(search_ids(s, "half"))][:3]
    finally:
        db.dispose()


@pytest.mark.parametrize("plan", ["chosen", "scan", "drive"])
def test_every_plan_gives_the_same_pages(library_db, monkeypatch, plan):
    import phototag.query.tags as tags

    if plan != "chosen":
        monkeypatch.setattr(tags, "prefer_scan", lambda *args: plan == "scan")
    rnd = random.Random(100)
    with library_db.session() as s:
        views = load_views(s)
        for _ in range(200):
            words = random_query(rnd)
            query = parse(words, now=NOW)
            whole = search_ids(s, query)
            assert set(whole) == {pid for pid, v in views.items() if query.match(v)}, words
            for k in (1, 3):
                assert search_ids(s, query, limit=k) == whole[:k], words
