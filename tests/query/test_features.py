"""Errors, resolvers (similar:/~text), plugin fields, SQLite functions, time zones, views."""

from __future__ import annotations

import datetime as dt
import sqlite3

import pytest

from phototag.db.models import Photo
from phototag.query import (
    FieldSpec,
    field_specs,
    Node,
    QueryError,
    install_sqlite_functions,
    parse,
    parse_query,
    register_field,
    search,
    search_hits,
    search_ids,
    unregister_field,
)
from phototag.query.nodes import view_get
from phototag.query.view import TagView, load_views

from .conftest import NOW, PHOTOS, set_tz


@pytest.mark.parametrize(
    "text, message",
    [
        ("camra:fuji", "unknown field 'camra' — did you mean 'camera'?"),
        ("tga:dog", "unknown field 'tga' — did you mean 'tag'?"),
        ("stauts:any", "did you mean 'status'?"),
        ("zzzz:1", "unknown field 'zzzz' (known fields:"),
        ("iso:abc", "iso: expects a whole number or a range like 100..800, got 'abc'"),
        ("iso:1.5", "iso: expects a whole number"),
        ("iso:800..100", "iso: empty range '800..100'"),
        ("iso::^1", "iso: expects a number"),
        ("width:..", "width: expects"),
        ("taken:2021-13", "taken: invalid date '2021-13'"),
        ("taken:June", "taken: cannot read the date 'June'"),
        ("taken:2022..2021", "taken: empty range"),
        ("added:..", "added: a range needs at least one end"),
        ("taken:", "taken: needs a date"),
        ("src:manuel", "src: expects one of model, manual, imported, plugin, got 'manuel' — did you mean 'manual'?"),
        ("status:gone", "status: expects one of ok, missing, error, any"),
        ("untagged:maybe", "untagged: expects true or false"),
        ("tag::(", "invalid regular expression '('"),
        ("path::[", "invalid regular expression"),
        ("camera:", "camera: needs a value"),
        ("tag:", "tag: needs a value"),
        ("^", "'^' must be followed by a term"),
        ("~", '"~" must be followed by a description'),
        ("^~sunset", "ranks photos and cannot be negated"),
        ("^similar:/a.jpg", "ranks photos and cannot be negated"),
        ("similar:", "similar: needs the path of a photo"),
        ('"tabby cat', "cannot split the query"),
    ],
)
def test_bad_queries_raise_a_readable_query_error(text, message):
    with pytest.raises(QueryError) as info:
        parse(text, now=NOW)
    assert message in str(info.value)
    assert isinstance(info.value, ValueError)


def test_sort_words_need_a_known_key_else_they_are_tags():
    assert parse("taken-", now=NOW).sort[0].descending is True
    q = parse("t-shirt", now=NOW)
    assert q.sort == () and "t-shirt" in repr(q)


# ---- resolvers ------------------------------------------------------------------------------


def _ids(db, *keys):
    return [db.id_of[k] for k in keys]


def test_text_term_keeps_the_resolver_ranking_and_combines_with_and(library_db):
    calls = []

    def text_resolver(session, text):
        calls.append(text)
        ranked = _ids(library_db, "cat_and_dog", "sky", "dog_beach", "gone_dog", "park")
        return [(pid, 1.0 - i / 10) for i, pid in enumerate(ranked)]

    with library_db.session() as s:
        hits = search_hits(s, '~"a dog outdoors" dog', resolvers={"text": text_resolver})
        assert calls == ["a dog outdoors"]
        search_hits(s, '~"a dog outdoors" dog , ~"a dog outdoors" sky', resolvers={"text": text_resolver})
    assert calls == ["a dog outdoors"] * 2  # one call per query, not per occurrence
    # AND with `dog` drops sky; status ok drops gone_dog; order = the resolver's
    assert [library_db.key_of[h.photo_id] for h in hits] == ["cat_and_dog", "dog_beach", "park"]
    assert [h.score for h in hits] == pytest.approx([1.0, 0.8, 0.6])


def test_ranked_results_honour_limit_and_sort_tokens(library_db):
    def similar(session, path):
        assert path == "/q/cat.jpg"
        return [(pid, 0.5) for pid in _ids(library_db, "weixin", "cat_sofa", "cat_and_dog", "flower")]

    with library_db.session() as s:
        limited = search_ids(s, "similar:/q/cat.jpg cat", limit=2, resolvers={"similar": similar})
        sorted_ = search_ids(s, "similar:/q/cat.jpg cat taken+", resolvers={"similar": similar})
        either = search_ids(s, "similar:/q/cat.jpg , car", resolvers={"similar": similar})
        photos = search(s, "similar:/q/cat.jpg", resolvers={"similar": similar})
    assert limited == _ids(library_db, "weixin", "cat_sofa")
    assert sorted_ == _ids(library_db, "cat_sofa", "cat_and_dog", "weixin")
    # photos matched only by the other OR group come after the ranked ones
    assert either == _ids(library_db, "weixin", "cat_sofa", "cat_and_dog", "flower", "car")
    assert [p.id for p in photos] == _ids(library_db, "weixin", "cat_sofa", "cat_and_dog", "flower")


def test_resolved_query_match_agrees_with_sql(library_db):
    def text(session, text):
        return [(pid, 0.1) for pid in _ids(library_db, "park", "car", "broken")]

    query = parse('~"green things" , cat', now=NOW)
    with library_db.session() as s:
        sql = set(search_ids(s, query, resolvers={"text": text}))
        resolved = query.resolve(s, {"text": text})
        views = load_views(s)
    assert {pid for pid, v in views.items() if resolved.match(v)} == sql
    assert sql == set(_ids(library_db, "park", "car", "cat_sofa", "cat_and_dog", "weixin"))


def test_a_ranked_term_without_its_resolver_is_a_query_error(library_db):
    with library_db.session() as s:
        with pytest.raises(QueryError, match="needs the 'similar' resolver"):
            search(s, "similar:/q/cat.jpg dog")
        with pytest.raises(QueryError, match="needs the 'text' resolver"):
            search(s, '~"sunset"', resolvers={"similar": lambda s, t: []})
    with pytest.raises(QueryError):
        parse("~sunset", now=NOW).match({"id": 1})


def test_a_resolver_can_return_many_hits(library_db):
    many = [(i, 1.0) for i in range(100_000, 150_000)] + [(library_db.id_of["car"], 0.5)]
    with library_db.session() as s:
        assert search_ids(s, "~cars", resolvers={"text": lambda s, t: many}) == [library_db.id_of["car"]]


# ---- plugin fields --------------------------------------------------------------------------


class PortraitTerm(Node):
    """A plugin's node: taller than wide (SQL via clause(), Python via match())."""

    def __init__(self, portrait: bool):
        self.portrait = portrait

    def clause(self):
        taller = Photo.height > Photo.width
        return (Photo.width.is_not(None) & Photo.height.is_not(None)) & (taller if self.portrait else ~taller)

    def match(self, view):
        w, h = view_get(view, "width"), view_get(view, "height")
        return w is not None and h is not None and ((h > w) == self.portrait)


def test_plugins_register_query_fields(library_db):
    from phototag.query.values import parse_bool

    spec = FieldSpec("portrait", lambda v: PortraitTerm(parse_bool(v.plain(), field=v.field)), "taller than wide")
    register_field(spec)  # what a plugin's register_query_fields hook returns
    try:
        assert spec in field_specs()
        with pytest.raises(ValueError, match="already registered"):
            register_field("portrait", lambda v: PortraitTerm(True))
        with pytest.raises(ValueError, match="already registered"):
            register_field("camera", lambda v: PortraitTerm(True))  # built-ins cannot be shadowed
        query = parse("portrait:false width:..3000", now=NOW)
        with library_db.session() as s:
            sql = {library_db.key_of[i] for i in search_ids(s, query)}
            views = load_views(s)
        assert sql == {"sky", "car", "dog_manual"}
        assert {library_db.key_of[i] for i, v in views.items() if query.match(v)} == sql
    finally:
        unregister_field("portrait")
    with pytest.raises(QueryError, match="unknown field 'portrait'"):
        parse("portrait:true")


# ---- SQLite functions, time zones, views ----------------------------------------------------


def test_install_sqlite_functions_on_a_plain_connection(tmp_path):
    conn = sqlite3.connect(tmp_path / "x.db")
    install_sqlite_functions(conn)
    install_sqlite_functions(conn)  # idempotent
    assert conn.execute("select 'IMG_1.HEIC' REGEXP '\\.HEIC$', 'a' REGEXP 'b', NULL REGEXP 'a'").fetchone() == (1, 0, None)
    assert conn.execute("select phototag_fold('ÉTÉ Straße'), phototag_fold(NULL)").fetchone() == ("été strasse", None)
    conn.close()


def test_added_dates_are_local_days_converted_to_utc():
    set_tz("Asia/Shanghai")  # UTC+8, no DST
    try:
        q = parse("added:2024-01-10 taken:2024-01-10", now=NOW)
    finally:
        set_tz("UTC")
    assert "Date(added_at, 2024-01-09T16:00:00..2024-01-10T16:00:00)" in repr(q)
    assert "Date(taken_at, 2024-01-10T00:00:00..2024-01-11T00:00:00)" in repr(q)  # wall time


def test_relative_dates_use_the_given_clock():
    q = parse("added:-1w..", now=dt.datetime(2030, 1, 8, 0, 0, tzinfo=dt.timezone.utc))
    assert "Date(added_at, 2030-01-01T00:00:00..)" in repr(q)
    assert parse("taken:-1m", now=NOW).expr.items[0].start == dt.datetime(2026, 10, 28, 12)


def test_path_home_is_expanded(monkeypatch):
    monkeypatch.setenv("HOME", "/home/someone")
    assert "Prefix('/home/someone/Pictures')" in repr(parse("path:~/Pictures/", now=NOW))
    assert "Similar('/home/someone/cat.jpg')" in repr(parse("similar:~/cat.jpg", now=NOW))


def test_match_accepts_plain_dicts_and_tuples():
    photo = {
        "id": 1, "path": "/p/a.jpg", "status": "ok", "camera_make": "FUJIFILM", "camera_model": "X100V",
        "tags": [("tabby cat", "虎斑猫", (("cat", "猫"), ("animal", "动物")), 0.7, "model")],
        "captions": ["A cat"], "models": {("ram_plus", "ram_plus/swin")},
    }
    for text, expected in [
        ("animal/", True), ("动物/", True), ("animal", False), ("tabby@0.8..", False),
        ('"tabby cat"@0.6..', True), ("camera:x100v src:model model:ram_plus caption:cat", True),
        ("status:missing", False), ("untagged:true", False), ("^cat/", False),
    ]:
        assert parse(text, now=NOW).match(photo) is expected, text
    view = dict(photo, tags=[TagView("dog", "狗", (), None, "manual")])
    assert parse("dog@0.99.. src:manual", now=NOW).match(view)


def test_views_load_tags_with_ancestors(library_db):
    with library_db.session() as s:
        views = load_views(s, [library_db.id_of["cat_sofa"], library_db.id_of["yin"]])
    cat_sofa = views[library_db.id_of["cat_sofa"]]
    tabby = next(t for t in cat_sofa.tags if t.name == "tabby cat")
    assert tabby.ancestors == (("cat", "猫"), ("animal", "动物"))
    assert cat_sofa.models == {("ram_plus", "ram_plus/swin_l_14m")}
    yin = views[library_db.id_of["yin"]].tags[0]
    assert yin.ancestors == (("yang", None),)  # the cycle stops


def test_parse_query_passes_a_query_through_and_where_is_usable_alone(library_db):
    q = parse_query("camera:fuji iso:..200")
    assert parse_query(q) is q
    from sqlalchemy import select

    with library_db.session() as s:
        rows = s.scalars(select(Photo.path).where(q.where()).order_by(*q.order_by())).all()
    assert rows == [PHOTOS["dog_beach"]["path"], PHOTOS["sky"]["path"]]
