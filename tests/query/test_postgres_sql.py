"""The query language's own functions in PostgreSQL's SQL agree with their Python faces: the
generated ``phototag_fold`` with ``str.casefold``, a translated regular expression with ``re.search``."""

from __future__ import annotations

import random
import re
import sys

import pytest
from pg import pg_module_url  # noqa: F401 (a fixture)
from sqlalchemy import text

from phototag.db.engine import open_database
from phototag.query.compile import postgres_regex
from phototag.query.errors import QueryError


@pytest.fixture(scope="module")
def pg(pg_module_url):  # noqa: F811
    db = open_database(pg_module_url)
    yield db
    db.dispose()


def test_fold_function_is_str_casefold_on_every_character_that_folds(pg):
    folding = [chr(c) for c in range(sys.maxunicode + 1)
               if not 0xD800 <= c <= 0xDFFF and chr(c).casefold() != chr(c)]
    rnd = random.Random(14)
    samples = ["", "ÉTÉ à la Plage", "Straße", "ΣΊΣΥΦΟΣ ς", "İstanbul", "ﬁne ﬃ", "KELVIN K", "微信图片", "mixed ASCII"]
    samples += ["".join(rnd.choice(folding + list("aZ é")) for _ in range(12)) for _ in range(200)]
    samples.append("".join(folding))  # every folding character once
    with pg.engine.connect() as conn:
        got = [conn.execute(text("SELECT phototag_fold(:t)"), {"t": s}).scalar() for s in samples]
        assert conn.execute(text("SELECT phototag_fold(NULL)")).scalar() is None
    assert got == [s.casefold() for s in samples]


PATTERNS = [
    r"^ta", r"^(dog|car)$", r"\.heic$", r"F[24]$", r"\bcat\b", r"\Bat", r"a{2,}", r"a{,2}b", r"a{x}",
    r"(?P<n>o)(?P=n)", r"[]a]", r"[[]", r"\x41", r"(?i)beach", r"a.b", r"(?s)a.b", r"(?m)^b", r"x$",
    r"\d+\s\w", r"[^a-z]", r"(?:ab)+", r"c(?=a)", r"(?<!t)a", r"(a)\1", r"[\d.]", r"\\", r"\$", r"}", r"ÉTÉ",
]
STRINGS = ["tabby", "dog", "car", "cats", "a.heic", "a.heic\n", "F2", "F4\n", "the cat sat", "concat",
           "aaa", "ab", "aab", "a{x}", "oo", "]", "[", "A", "BEACH", "a\nb", "a\nb\n", "axb", "x\n", "12 z",
           "ca", "ta", "aa", "1.5", "back\\slash", "$", "}", "ÉTÉ à la plage", ""]


@pytest.mark.filterwarnings("ignore::FutureWarning")  # Python's note on "[[]"
@pytest.mark.parametrize("pattern", PATTERNS)
def test_translated_regex_matches_what_python_matches(pg, pattern):
    with pg.engine.connect() as conn:
        got = {s for s in STRINGS
               if conn.execute(text("SELECT CAST(:s AS text) ~ :p"), {"s": s, "p": postgres_regex(pattern)}).scalar()}
    assert got == {s for s in STRINGS if re.search(pattern, s)}


@pytest.mark.parametrize("pattern", [r"(?i:a)b", r"(?>ab)", r"a++", r"\N{BULLET}", r"(?a)\w"])
def test_regex_without_a_postgresql_equivalent_is_a_query_error(pattern):
    with pytest.raises(QueryError, match="not supported on PostgreSQL"):
        postgres_regex(pattern)


def test_a_nul_character_in_a_query_is_a_query_error_on_both_databases(library_db):
    """PostgreSQL text cannot hold NUL (a bound value with one was a driver error, a web search with
    %00 a server error); no path, tag or caption holds one, so the query is refused on both."""
    from phototag.query import search_ids

    with library_db.session() as s:
        for query in ("path:/lib\x00", ["caption:a\x00b"], "tag::\x00"):
            with pytest.raises(QueryError, match="NUL"):
                search_ids(s, query)
