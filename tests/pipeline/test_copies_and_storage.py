"""Copies reuse tags, one photo the database cannot store does not stop a scan, and tags get the
Chinese names a library tagged before had none of: through the CLI on a real library with real photos."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from conftest import cli, save_sample
from conftest import cli_scan as scan




def listed(home: Path, photo: Path) -> dict:
    return json.loads(cli(home, "tag", "list", photo, "--format", "json").stdout)


def query(home: Path, sql: str, *params) -> list[tuple]:
    con = sqlite3.connect(home / "phototag.db")
    try:
        return con.execute(sql, params).fetchall()
    finally:
        con.close()


def model_work(home: Path) -> int:
    return query(home, "SELECT coalesce(sum(photo_count), 0) FROM model_runs")[0][0]


def test_a_byte_identical_copy_gets_the_tags_of_its_twin_without_the_model(tmp_path):
    home, folder = tmp_path / "home", tmp_path / "Pictures"
    cat = save_sample("chelsea", folder / "cat.jpg", size=320)
    assert scan(home, folder)["new"] == 1
    cli(home, "tag", "remove", cat, "cat")  # the user's corrections of the original are its own
    cli(home, "tag", "add", cat, "Mittens")
    work = model_work(home)

    copy = folder / "backup" / "cat-copy.jpg"
    copy.parent.mkdir()
    shutil.copyfile(cat, copy)  # a new mtime, the same bytes
    report = scan(home, folder)
    assert (report["new"], report["copied"], report["tagged"], report["failed"]) == (1, 1, 0, 0)
    assert model_work(home) == work  # not run again

    original, twin = listed(home, cat), listed(home, copy)
    model = lambda data: {(t["name"], t["score"]) for t in data["tags"] if t["source"] == "model"}  # noqa: E731
    assert model(twin) == model(original) | {("cat", next(s for n, s in model(twin) if n == "cat"))}
    assert "Mittens" not in {t["name"] for t in twin["tags"]} and twin["removed"] == []
    embeddings = query(home, "SELECT p.path, e.vector FROM embeddings e JOIN photos p ON p.id = e.photo_id")
    assert len(embeddings) == 2 and embeddings[0][1] == embeddings[1][1]
    shown = json.loads(cli(home, "show", copy, "--format", "json").stdout)
    assert (shown["width"], shown["height"], shown["status"]) == (320, 213, "ok")

    # the copy's own removal; new content at its path (a real model run), then the twin's bytes again
    cli(home, "tag", "remove", copy, "animal")
    save_sample("coffee", copy, size=320)
    assert scan(home, folder)["tagged"] == 1
    shutil.copyfile(cat, copy)
    report = scan(home, folder)
    assert (report["updated"], report["copied"], report["tagged"]) == (1, 1, 0)
    twin = listed(home, copy)
    assert "animal" not in {t["name"] for t in twin["tags"]} and twin["removed"] == ["animal"]  # its own removal
    assert "cat" in {t["name"] for t in twin["tags"]}


def test_tags_from_before_chinese_names_get_them(tmp_path):
    """A library tagged before the built-in model had Chinese names: a re-scan (no model work) fills
    them in, and `search 猫` finds the cat."""
    home, folder = tmp_path / "home", tmp_path / "Pictures"
    cat = save_sample("chelsea", folder / "cat.jpg", size=320)
    scan(home, folder)
    cli(home, "tag", "add", cat, "Mittens")
    query(home, "SELECT 1")  # the database exists
    con = sqlite3.connect(home / "phototag.db")
    con.execute("UPDATE tags SET name_zh = NULL")
    con.commit()
    con.close()
    cli(home, "search", "猫", code=1)  # nothing found: what such a library answered
    work = model_work(home)
    assert scan(home, folder)["unchanged"] == 1
    assert model_work(home) == work
    assert str(cat) in cli(home, "search", "猫").stdout
    names = dict(query(home, "SELECT name, name_zh FROM tags WHERE name IN ('cat', 'Mittens')"))
    assert names == {"cat": "猫", "Mittens": None}  # a name the model does not know stays without one


def test_ensure_tags_fills_a_missing_chinese_name_once(library):
    from sqlalchemy import update

    from phototag.db.models import Tag

    with library.session() as session:
        library.ensure_tags(session, ["cat", "dog"])  # made without Chinese names (e.g. by `tag add`)
    with library.session() as session:
        library.ensure_tags(session, ["cat"], {}, {"cat": "猫", "dog": "狗"})
    with library.session() as session:
        assert dict(session.execute(Tag.__table__.select().with_only_columns(Tag.name, Tag.name_zh)).all()) == \
            {"cat": "猫", "dog": None}
        session.execute(update(Tag).where(Tag.name == "cat").values(name_zh="家猫"))  # the user's own name
    with library.session() as session:
        library.forget_tag_cache()
        library.ensure_tags(session, ["cat", "dog"], {}, {"cat": "猫", "dog": "狗"})
    with library.session() as session:
        assert dict(session.execute(Tag.__table__.select().with_only_columns(Tag.name, Tag.name_zh)).all()) == \
            {"cat": "家猫", "dog": "狗"}  # filled where empty, never overwritten


class _FolderTagPlugin:
    """A plugin that tags each photo with its folder's name: a folder named in Latin-1 (an old archive)
    gives a name with lone surrogates, which SQLite cannot store as text."""

    from phototag.hookspecs import hookimpl

    @staticmethod
    @hookimpl
    def adjust_tags(photo_path, tags, model_id):
        from phototag.tagging.base import TagScore

        tags.append(TagScore(Path(photo_path).parent.name, 1.0))


@pytest.fixture
def folder_tag_plugin():
    from phototag import plugins

    plugins.reset_plugins()
    plugins.register_plugin(_FolderTagPlugin, "folder-tags")
    yield
    plugins.reset_plugins()


def test_a_photo_the_database_cannot_store_is_that_photos_error_not_the_scans(library, tmp_path, folder_tag_plugin):
    from sqlalchemy import select

    from phototag.db.models import Photo
    from phototag.pipeline import Pipeline
    from watch.helpers import ColourTagger, write_photo

    root = tmp_path / "Pictures"
    good = [write_photo(root / "2024" / f"p{i}.jpg", i) for i in range(5)]
    odd_folder = root / os.fsdecode(b"caf\xe9")
    bad = write_photo(odd_folder / "bad.jpg", 7)
    report = Pipeline(library, ColourTagger(), batch_size=8, decode_workers=2).scan([root])  # one batch of 6
    assert (report.new, report.failed) == (5, 1), report.as_dict()
    assert report.errors[0][0] == str(bad) and "cannot be stored" in report.errors[0][1]
    with library.session() as session:
        rows = {p.path: (p.status, p.tagged_run_id is not None) for p in session.scalars(select(Photo))}
    assert rows[str(bad)][0] == "error"
    assert all(rows[str(p)] == ("ok", True) for p in good)
    assert {"2024"} <= {t["name"] for t in _tags(library, good[0])}

    again = Pipeline(library, ColourTagger(), batch_size=8, decode_workers=2).scan([root])
    assert (again.unchanged, again.failed, again.new) == (6, 0, 0)  # recorded: not retried until it changes


def _tags(lib, path):
    with lib.session() as session:
        return lib.photo_tags(session, lib.photo_by_path(session, path).id)
