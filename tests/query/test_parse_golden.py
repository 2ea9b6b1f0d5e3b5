"""Golden file of parse results: ``query<TAB>repr(Query)``, one per line; a query that is a
mistake has ``QueryError: message`` (what the user is told) instead.

To add a query, append a line with the query and any second column, then run with
PHOTOTAG_UPDATE_GOLDEN=1 and review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from phototag.query import QueryError, parse
from phototag.query.view import load_views

from .conftest import NOW

GOLDEN = Path(__file__).with_name("golden_parse.txt")


def read_golden() -> list[tuple[str, str]]:
    rows = []
    for line in GOLDEN.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            query, _, expected = line.partition("\t")
            rows.append((query, expected))
    return rows


def parsed(query: str) -> str:
    try:
        return repr(parse(query, now=NOW))
    except QueryError as exc:
        return f"QueryError: {exc}"


def test_parse_results_match_the_golden_file():
    rows = read_golden()
    assert len(rows) >= 60
    got = [(q, parsed(q)) for q, _ in rows]
    if os.environ.get("PHOTOTAG_UPDATE_GOLDEN"):
        header = [l for l in GOLDEN.read_text(encoding="utf-8").splitlines() if l.startswith("#")]
        GOLDEN.write_text("\n".join(header + [f"{q}\t{r}" for q, r in got]) + "\n", encoding="utf-8")
    assert sum(e.startswith("QueryError: ") for _, e in rows) >= 10  # mistakes are golden too
    mismatches = [f"{q!r}\n  golden: {e}\n  now:    {r}" for (q, e), (_, r) in zip(rows, got) if e != r]
    assert not mismatches, "\n".join(mismatches)


@pytest.fixture(scope="module")
def views(library_db):
    with library_db.session() as s:
        return load_views(s)


def test_match_agrees_with_sql_for_every_golden_query(library_db, views):
    """The two faces of every query select the same photos of the library."""
    from phototag.query import search_ids

    checked = 0
    for query_text, expected in read_golden():
        if expected.startswith("QueryError: "):
            continue
        query = parse(query_text, now=NOW)
        if query.ranked_terms:
            continue
        with library_db.session() as s:
            sql = set(search_ids(s, query))
        py = {pid for pid, view in views.items() if query.match(view)}
        assert sql == py, f"{query_text!r}: SQL {sorted(sql)} vs match {sorted(py)}"
        checked += 1
    assert checked >= 50


def test_shell_quoting_reaches_the_same_query():
    """What bash hands over for the documented spellings."""
    assert parse(['~"a dog on a beach"'], now=NOW) == parse(["~a dog on a beach"], now=NOW)
    assert parse(['tag:"tabby cat"'], now=NOW) == parse(["tag:tabby cat"], now=NOW)
    assert parse(['"tabby cat"'], now=NOW) == parse(["tabby cat"], now=NOW)
    assert parse(['camera::"^NIKON Z"'], now=NOW) == parse(["camera::^NIKON Z"], now=NOW)
    assert parse("~'a dog'", now=NOW) == parse(["~a dog"], now=NOW)
