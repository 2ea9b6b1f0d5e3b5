"""Table-driven: query text → SQL results on a real library file, and match() agrees."""

from __future__ import annotations

import pytest

from phototag.query import parse, search, search_ids
from phototag.query.view import load_views

from .conftest import NOW, OK, PHOTOS

DOGS = {"dog_beach", "park", "dog_manual", "cat_and_dog"}
CATS = {"cat_sofa", "cat_and_dog", "weixin"}
CAT_TREE = CATS | {"tabby"}
ANIMALS = DOGS | CAT_TREE
TAGGED = {k for k in OK if PHOTOS[k].get("tags")}
NO_TAKEN = {k for k in OK if PHOTOS[k].get("taken_at") is None}
FUJI = {"dog_beach", "park", "sky"}

TABLE: list[tuple[str, set[str]]] = [
    # bare words are tags: English or Chinese, any case; missing/error photos are left out
    ("dog", DOGS),
    ("DOG", DOGS),
    ("狗", DOGS),
    ("猫", CATS),
    ("tag:猫", CATS),
    ('"tabby cat"', {"cat_sofa", "tabby"}),
    ("虎斑猫", {"cat_sofa", "tabby"}),
    ("tabby", set()),  # whole names, not substrings
    # hierarchy
    ("animal", {"cat_and_dog"}),
    ("animal/", ANIMALS),
    ("tag:animal/", ANIMALS),
    ("动物/", ANIMALS),
    ("cat/", CAT_TREE),
    ("tag:猫/", CAT_TREE),
    ("yin/", {"yin"}),  # a parent cycle terminates
    ("^animal/", OK - ANIMALS),
    # exact / regex
    ("tag:=dog", DOGS),
    ("tag:=Dog", set()),
    ("tag:=~DOG", DOGS),
    ("tag::^ta", {"cat_sofa", "tabby"}),
    ("tag::^(dog|car)$", DOGS | {"car"}),
    ("tag::^ani/", ANIMALS),
    # scores (a tag without a score counts as 1.0)
    ("dog@0.8..", {"dog_beach", "dog_manual", "cat_and_dog"}),
    ("dog@0.8", {"dog_beach", "dog_manual", "cat_and_dog"}),
    ("tag:dog@..0.6", {"park"}),
    ("dog@0.5..0.9", {"park", "cat_and_dog"}),
    ("tag:animal/@0.9..", {"dog_beach", "tabby", "dog_manual", "cat_and_dog", "weixin"}),
    # AND, OR, NOT
    ("dog cat", {"cat_and_dog"}),
    ("dog , cat", DOGS | CATS),
    ("dog, cat", DOGS | CATS),
    ("dog , cat , car", DOGS | CATS | {"car"}),
    ("dog sky , car", {"park", "car"}),
    ("^dog", OK - DOGS),
    ("animal/ ^dog", CAT_TREE - {"cat_and_dog"}),
    ("beach ^caption:beach", {"beach_day", "ete"}),
    ("", OK),
    # dates
    ("taken:2021", {"park", "sky", "car"}),
    ("taken:2021-06", {"park", "sky"}),
    ("taken:2021-06-01", {"park"}),
    ("taken:2019..2020", {"dog_beach", "cat_sofa", "tabby"}),
    ("taken:..2019", {"dog_beach", "cat_sofa"}),
    ("taken:2024..", {"cat_and_dog", "weixin", "flower"}),
    ("taken:2019-12-31T23", {"cat_sofa"}),
    ("taken:2019-12-31T23:59:59", {"cat_sofa"}),
    ("taken:2019-12-31T23:58", set()),
    ("^taken:1900..2100", NO_TAKEN),
    ("taken:2021-06..2021-12-24", {"park", "sky", "car"}),
    ("added:-1w..", {"dog_manual", "cat_and_dog"}),
    ("added:-1w", {"dog_manual", "cat_and_dog"}),
    ("added:-2w..-1w", {"beach_day"}),
    ("added:..-1y", OK - {"dog_manual", "cat_and_dog", "beach_day"}),
    ("added:2024-01", {"dog_beach", "cat_sofa"}),
    ("added:today", {"cat_and_dog"}),
    ("added:-3d..-1d dog", {"dog_manual"}),
    # camera, lens, format
    ("camera:fuji", FUJI),
    ("camera:x100v", {"dog_beach", "sky"}),
    ("camera:=X100V", {"dog_beach", "sky"}),
    ("camera:=x100v", set()),
    ('camera:"fujifilm x100v"', {"dog_beach", "sky"}),
    ("camera:canon", {"cat_sofa", "beach_day"}),
    ("^camera:fuji", OK - FUJI),
    ('camera::"^NIKON Z"', {"flower"}),
    ("lens:rf24", {"cat_sofa"}),
    ("lens:23MM", {"dog_beach"}),
    ("format:heif", {"tabby"}),
    ("format:=PNG", {"car"}),
    # paths
    ("path:2021", {"park", "sky", "car"}),
    ("path:/lib/2021", {"park", "sky", "car"}),
    ("path:/lib/2021/", {"park", "sky", "car"}),
    ("path:/lib/202", set()),  # a folder prefix is whole components
    ("path:*.heic", {"tabby"}),
    ("path:/lib/2021/*/*.jpg", {"park"}),  # globs are case-sensitive
    ("path:/lib/2024/*", {"cat_and_dog", "weixin", "flower", "ete"}),
    ("path:/lib/202?/*.jpg", {"dog_manual", "untagged", "beach_day", "yin",
                              "cat_and_dog", "weixin", "ete"}),
    ("path:extra", {"flower"}),
    ("path::\\.heic$", {"tabby"}),
    ('path:"Beach Day"', {"beach_day"}),
    ("path:微信", {"weixin"}),
    ("path:sky.jpg", {"sky"}),
    ("path:été", {"ete"}),
    ("path:=/lib/2021/06/sky.JPG", {"sky"}),
    # numbers
    ("iso:100..800", {"dog_beach", "park", "sky", "beach_day"}),
    ("iso:1600", {"cat_sofa"}),
    ("iso:..100", {"tabby", "sky"}),
    ("iso:6400..", {"untagged"}),
    ("width:6000..", {"dog_beach", "cat_sofa", "park", "untagged"}),
    ("height:..768", {"car", "dog_manual"}),
    ("width:1000..5000 height:..3000", {"car", "sky", "beach_day"}),
    # provenance
    ("src:manual", {"tabby", "dog_manual", "beach_day", "ete"}),
    ("src:imported", {"sky", "weixin"}),
    ("src:plugin", {"car"}),
    ("src:model", {"dog_beach", "cat_sofa", "park", "beach_day", "yin", "cat_and_dog"}),
    ("tag:dog src:manual", {"dog_manual"}),
    ("^src:model", OK - {"dog_beach", "cat_sofa", "park", "beach_day", "yin", "cat_and_dog"}),
    ("model:ram_plus", {"cat_sofa", "park"}),
    ("model:RAM_PLUS", {"cat_sofa", "park"}),
    ("model:builtin/efficientnet-lite0", {"dog_beach", "beach_day", "yin", "cat_and_dog"}),
    ("model::^ram", {"cat_sofa", "park"}),
    ("model:ram", set()),
    # captions
    ("caption:beach", {"dog_beach"}),
    ("caption:DOG", {"dog_beach", "park"}),
    ("caption:猫", {"weixin"}),
    ("caption:été", {"ete"}),  # Unicode case folding on both faces
    ("caption::^Dog", {"park"}),
    ('caption:"under trees"', {"park"}),
    # untagged
    ("untagged:true", {"untagged", "flower"}),
    ("untagged:yes", {"untagged", "flower"}),
    ("untagged:false", TAGGED),
    ("^untagged:true", TAGGED),
    # status
    ("status:missing", {"gone_dog"}),
    ("status:error", {"broken"}),
    ("status:any dog", DOGS | {"gone_dog"}),
    ("status:missing , cat", {"gone_dog"} | CATS),
    ("^status:ok", {"gone_dog", "broken"}),
    ("status:any", set(PHOTOS)),
    ("status:any ^status:missing", OK | {"broken"}),
    # combinations
    ("tag:beach taken:2023 camera:canon", {"beach_day"}),
    ("animal/ taken:2019..2021 ^src:manual , sky", {"dog_beach", "cat_sofa", "park", "sky", "beach_day"}),
    ("dog taken-", DOGS),
]


@pytest.fixture(scope="module")
def views(library_db):
    with library_db.session() as s:
        return load_views(s)


def keys(db, ids) -> set[str]:
    return {db.key_of[i] for i in ids}


@pytest.mark.parametrize("text, expected", TABLE, ids=[t or "<empty>" for t, _ in TABLE])
def test_sql_and_match_give_the_expected_photos(library_db, views, text, expected):
    query = parse(text, now=NOW)
    with library_db.session() as s:
        got_sql = keys(library_db, search_ids(s, query))
    got_match = {library_db.key_of[i] for i, v in views.items() if query.match(v)}
    assert got_sql == expected, f"{text!r} → {query!r}"
    assert got_match == expected, f"{text!r} → {query!r} (match)"


def test_the_cli_word_list_form_gives_the_same_query():
    assert parse(["tag:tabby cat", ",", "dog", "taken-"], now=NOW) == parse('"tag:tabby cat" , dog taken-', now=NOW)
    assert parse(["path::\\.heic$"], now=NOW) == parse("path::\\.heic$", now=NOW)


@pytest.mark.parametrize(
    "text, order",
    [
        ("dog", ["dog_beach", "park", "dog_manual", "cat_and_dog"]),  # default: by path
        ("dog taken-", ["cat_and_dog", "park", "dog_beach", "dog_manual"]),  # no date: last
        ("dog taken+", ["dog_beach", "park", "cat_and_dog", "dog_manual"]),
        ("camera:fuji iso-", ["park", "dog_beach", "sky"]),
        ("camera:fuji iso+", ["sky", "dog_beach", "park"]),
        ("src:model camera+ taken-", ["beach_day", "cat_sofa", "park", "dog_beach", "cat_and_dog", "yin"]),
        ("added- animal/", ["cat_and_dog", "dog_manual", "weixin", "park", "tabby", "cat_sofa", "dog_beach"]),
    ],
)
def test_sort_tokens_order_the_results(library_db, text, order):
    with library_db.session() as s:
        got = [library_db.key_of[i] for i in search_ids(s, parse(text, now=NOW))]
    assert got == order


def test_search_returns_photos_and_honours_limit(library_db):
    with library_db.session() as s:
        photos = search(s, "dog taken-", limit=2)
        assert [p.path for p in photos] == [PHOTOS["cat_and_dog"]["path"], PHOTOS["park"]["path"]]
        assert search(s, "dog", limit=0) == []
        assert len(search(s, ["status:any"])) == len(PHOTOS)


def test_user_text_is_bound_never_formatted_into_sql(library_db):
    evil = "x'); DROP TABLE photos; --"
    query = parse(["camera:" + evil, ",", "tag:" + evil, ",", "path::" + evil.replace("(", "\\(").replace(")", "\\)")])
    sql = str(query.statement())
    assert "DROP" not in sql and "x'" not in sql
    with library_db.session() as s:
        assert search_ids(s, query) == []
        assert len(search_ids(s, "status:any")) == len(PHOTOS)  # the table is still there
