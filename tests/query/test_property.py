"""Property: for random combinations of terms, SQL and match() select the same photos."""

from __future__ import annotations

import random

import pytest

from phototag.query import parse, search_ids
from phototag.query.view import load_views

from .conftest import NOW
from .test_search_table import TABLE

ATOMS = sorted({word for text, _ in TABLE for word in text.split() if word not in (",",) and '"' not in word})


def random_query(rnd: random.Random) -> list[str]:
    words: list[str] = []
    for group in range(rnd.choice([1, 1, 2, 3])):
        if group:
            words.append(",")
        for _ in range(rnd.randint(1, 3)):
            atom = rnd.choice(ATOMS).rstrip(",")
            if rnd.random() < 0.3 and not atom.startswith("^"):
                atom = "^" + atom
            words.append(atom)
    return words


@pytest.fixture(scope="module")
def views(library_db):
    with library_db.session() as s:
        return load_views(s)


def test_sql_and_match_agree_on_random_queries(library_db, views):
    rnd = random.Random(20261127)
    assert len(ATOMS) > 80
    checked = nonempty = 0
    with library_db.session() as s:
        for _ in range(400):
            words = random_query(rnd)
            query = parse(words, now=NOW)
            sql = set(search_ids(s, query))
            py = {pid for pid, v in views.items() if query.match(v)}
            assert sql == py, f"{words}: SQL {sorted(sql)} vs match {sorted(py)} for {query!r}"
            checked += 1
            nonempty += bool(sql)
    assert nonempty > 100  # the property is not only checked on empty results
