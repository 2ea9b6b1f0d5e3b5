"""AST → SQLAlchemy: the SQL face of every query node, for SQLite and PostgreSQL.

Every user-supplied value travels as a bound parameter; nothing the user typed is formatted into
SQL text. Case-insensitive comparisons and regular expressions call two Python functions that
:func:`install_sqlite_functions` registers on each SQLite connection (this module has the library
engine run it on every new connection, :func:`phototag.db.engine.on_new_connection`;
:func:`phototag.query.search` also makes sure), so SQL and :meth:`Node.match` use the very same
``str.casefold`` and ``re.search``. They are the query language's, not the database's: the
database layer never imports this package.

On PostgreSQL the same semantics are SQL: ``phototag_fold(text)`` is a SQL function generated from
this Python's ``str.casefold`` table (:func:`postgres_fold_function`; created, or replaced when the
Unicode version changed, on a library engine's new connections), a Python regular expression is
translated to PostgreSQL's (:func:`postgres_regex`), ``instr`` is ``strpos`` and a JSON id list
is read with ``json_array_elements_text``. tests/query runs on both databases.
"""

from __future__ import annotations

import functools
import json
import re
import sys
import unicodedata
from typing import Any, Sequence

from sqlalchemy import (
    ColumnElement,
    and_,
    bindparam,
    case,
    false,
    func,
    literal,
    not_,
    or_,
    select,
    true,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import ColumnElement as _ColumnElement
from sqlalchemy.sql.functions import GenericFunction
from sqlalchemy.types import Boolean, Integer

from phototag.db.engine import on_new_connection
from phototag.db.models import Caption, FsPath, ModelRun, Photo, PhotoTag, Tag, encode_path
from phototag.query.errors import QueryError
from phototag.query.fields import sort_columns
from phototag.query.matchers import Contains, Exact, Fold, Matcher, Prefix, Regex, compiled_regex, fold
from phototag.query.nodes import (
    All,
    And,
    CaptionTerm,
    ColumnTerm,
    DateTerm,
    ModelTerm,
    Node,
    Not,
    NumberTerm,
    Or,
    RankedTerm,
    SourceTerm,
    StatusTerm,
    TagTerm,
    UntaggedTerm,
)

FOLD_FUNCTION = "phototag_fold"


def _sql_fold(value: Any) -> str | None:
    if value is None:
        return None
    return fold(value if isinstance(value, str) else str(value))


def _sql_regexp(pattern: Any, value: Any) -> int | None:
    # SQLite evaluates ``value REGEXP pattern`` as regexp(pattern, value)
    if pattern is None or value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    return 1 if compiled_regex(pattern).search(text) else 0


@on_new_connection
def install_sqlite_functions(dbapi_conn: Any) -> None:
    """Register ``REGEXP`` and ``phototag_fold()`` on a ``sqlite3`` connection (idempotent).

    Every connection a library engine opens once this module is imported gets them; for an engine
    of your own, call it from the engine's ``connect`` event::

        event.listen(engine, "connect", lambda conn, _rec: install_sqlite_functions(conn))
    """
    dbapi_conn.create_function("regexp", 2, _sql_regexp, deterministic=True)
    dbapi_conn.create_function(FOLD_FUNCTION, 1, _sql_fold, deterministic=True)


# ---- PostgreSQL -----------------------------------------------------------------------------
#
# str.casefold is a per-character map (no context), so it is one translate() for the characters
# that fold to one character and a replace() for each of the ~100 that fold to several (ß → ss);
# what they produce is already folded, so the order does not matter. ASCII-only text (the usual
# case: octet_length = char_length) takes a short translate of A-Z.

#: bumped when the generated function changes for another reason than the Unicode version
_FOLD_FUNCTION_VERSION = 1
_FOLD_LOCK = 0x70686F746F746167 + 2  # an advisory lock key: one creator at a time


def _fold_tag() -> str:
    return f"phototag casefold v{_FOLD_FUNCTION_VERSION}, unicode {unicodedata.unidata_version}"


def _sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@functools.lru_cache(maxsize=1)
def postgres_fold_function() -> str:
    """``CREATE OR REPLACE FUNCTION phototag_fold(text)``: :func:`fold` (``str.casefold``) in SQL."""
    src: list[str] = []
    dst: list[str] = []
    multi: list[tuple[str, str]] = []
    for code in range(sys.maxunicode + 1):
        if 0xD800 <= code <= 0xDFFF:
            continue
        ch = chr(code)
        folded = fold(ch)
        if folded == ch:
            continue
        if len(folded) == 1:
            src.append(ch)
            dst.append(folded)
        else:
            multi.append((ch, folded))
    full = f"translate(t, {_sql_str(''.join(src))}, {_sql_str(''.join(dst))})"
    for ch, folded in multi:
        full = f"replace({full}, {_sql_str(ch)}, {_sql_str(folded)})"
    ascii_upper = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    return (f"CREATE OR REPLACE FUNCTION {FOLD_FUNCTION}(t text) RETURNS text "
            "LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $phototag_fold$ "
            f"SELECT CASE WHEN octet_length(t) = char_length(t) "
            f"THEN translate(t, '{ascii_upper}', '{ascii_upper.lower()}') ELSE {full} END "
            "$phototag_fold$")


@on_new_connection(dialect="postgresql")
def install_postgres_functions(dbapi_conn: Any) -> None:
    """Make sure the database has this phototag's ``phototag_fold(text)`` (a psycopg connection; one
    cheap read when it has): created when missing, replaced when it was made from another Unicode
    version. A user who may not create functions gets the error when a query needs it."""
    check = f"SELECT obj_description(to_regprocedure('{FOLD_FUNCTION}(text)'), 'pg_proc')"
    tag = _fold_tag()
    try:
        with dbapi_conn.cursor() as cur:
            cur.execute(check)
            if cur.fetchone()[0] == tag:
                return
            cur.execute(f"SELECT pg_advisory_xact_lock({_FOLD_LOCK})")
            cur.execute(check)
            if cur.fetchone()[0] != tag:
                cur.execute(postgres_fold_function())
                cur.execute(f"COMMENT ON FUNCTION {FOLD_FUNCTION}(text) IS {_sql_str(tag)}")
        dbapi_conn.commit()
    except Exception:  # e.g. no CREATE privilege: the query that needs the function says so
        dbapi_conn.rollback()


_PY_FLAGS = re.compile(r"\(\?([aiLmsux]+)\)")
_QUANTIFIER = re.compile(r"\{(\d*)(?:(,)(\d*))?\}")


@functools.lru_cache(maxsize=256)
def postgres_regex(pattern: str) -> str:
    """A Python regular expression (as :class:`~phototag.query.matchers.Regex` searches with it) as a
    PostgreSQL advanced regular expression with the same matches: ``\\b``/``\\B`` are ``\\y``/``\\Y``,
    ``.`` does not match a newline, ``$`` also matches before a final newline, named groups are
    numbered, ``\\xhh`` is ``\\u00hh``, a ``{`` that is no quantifier is literal. What PostgreSQL
    has no equivalent for (scoped flags, atomic groups, possessive quantifiers, ``\\N{…}``) is a
    :class:`QueryError`."""
    compiled_regex(pattern)  # a bad pattern is the same error on both databases
    flags = ""
    pos = 0
    while (m := _PY_FLAGS.match(pattern, pos)) is not None:
        flags += m.group(1)
        pos = m.end()
    if "a" in flags or "L" in flags:
        raise QueryError(f"regular expression {pattern!r}: the (?a) flag is not supported on PostgreSQL")
    dotall, multiline = "s" in flags, "m" in flags
    options = ("i" if "i" in flags else "") + ("w" if multiline else "") + ("x" if "x" in flags else "")
    out: list[str] = [f"(?{options})"] if options else []
    names: dict[str, int] = {}
    groups = 0
    n = len(pattern)
    i = pos

    def unsupported(what: str) -> QueryError:
        return QueryError(f"regular expression {pattern!r}: {what} is not supported on PostgreSQL")

    def escape(j: int, in_class: bool) -> tuple[str, int]:
        c = pattern[j + 1]
        if c == "x":
            return "\\u00" + pattern[j + 2:j + 4], j + 4
        if c == "N":
            raise unsupported("\\N{...}")
        if not in_class and c == "b":
            return "\\y", j + 2
        if not in_class and c == "B":
            return "\\Y", j + 2
        if c == "U":
            return pattern[j:j + 10], j + 10
        if c == "u":
            return pattern[j:j + 6], j + 6
        return pattern[j:j + 2], j + 2

    while i < n:
        c = pattern[i]
        if c == "\\":
            text, i = escape(i, False)
            out.append(text)
        elif c == "[":
            j = i + 1
            part = ["["]
            if j < n and pattern[j] == "^":
                part.append("^")
                j += 1
            first = True
            while j < n and (pattern[j] != "]" or first):
                ch = pattern[j]
                if ch == "\\":
                    text, j = escape(j, True)
                    part.append(text)
                elif ch in "[]":
                    part.append("\\" + ch)
                    j += 1
                else:
                    part.append(ch)
                    j += 1
                first = False
            part.append("]")
            out.append("".join(part))
            i = j + 1
        elif c == "(":
            if pattern.startswith("(?P<", i):
                end = pattern.index(">", i)
                groups += 1
                names[pattern[i + 4:end]] = groups
                out.append("(")
                i = end + 1
            elif pattern.startswith("(?P=", i):
                end = pattern.index(")", i)
                out.append(f"\\{names[pattern[i + 4:end]]}")
                i = end + 1
            elif pattern.startswith("(?#", i):
                i = pattern.index(")", i) + 1
            elif pattern.startswith(("(?:", "(?=", "(?!", "(?<=", "(?<!"), i):
                out.append("(")
                i += 1
            elif pattern.startswith("(?", i):
                raise unsupported(f"the group {pattern[i:i + 4]!r}…")
            else:
                groups += 1
                out.append("(")
                i += 1
        elif c == ".":
            out.append("." if dotall else "[^\\n]")
            i += 1
        elif c == "$":
            out.append("$" if multiline else "(?=\\n?$)")
            i += 1
        elif c == "{":
            m = _QUANTIFIER.match(pattern, i)
            if m is not None and (m.group(1) or m.group(3)):
                out.append("{" + (m.group(1) or "0") + (m.group(2) or "") + (m.group(3) or "") + "}")
                i = m.end()
            else:
                out.append("\\{")
                i += 1
        elif c == "}":
            out.append("\\}")
            i += 1
        elif c in "*+?}" and i + 1 < n and pattern[i + 1] == "+":
            raise unsupported("a possessive quantifier")
        else:
            out.append(c)
            i += 1
    return "".join(out)


class _instr(GenericFunction):
    """``instr(haystack, needle)``: 1-based position of ``needle`` in ``haystack``, 0 when absent."""

    name = "instr"
    type = Integer()
    inherit_cache = True


@compiles(_instr, "postgresql")
def _instr_postgresql(element: Any, compiler: Any, **kw: Any) -> str:
    return f"strpos({compiler.process(element.clauses, **kw)})"


class _InJsonIds(_ColumnElement):
    """``column IN (the ints of a JSON array bound as one parameter)``: one parameter however many
    ids (SQLite's variable limit)."""

    type = Boolean()
    inherit_cache = False  # holds the JSON text as a literal bind

    def __init__(self, column: Any, ids: Sequence[int]):
        self.column = column
        self.ids = bindparam(None, json.dumps(list(ids)))


@compiles(_InJsonIds)
def _in_json_ids(element: _InJsonIds, compiler: Any, **kw: Any) -> str:
    return (f"{compiler.process(element.column, **kw)} IN "
            f"(SELECT value FROM json_each({compiler.process(element.ids, **kw)}))")


@compiles(_InJsonIds, "postgresql")
def _in_json_ids_postgresql(element: _InJsonIds, compiler: Any, **kw: Any) -> str:
    return (f"{compiler.process(element.column, **kw)} IN (SELECT CAST(value AS BIGINT) FROM "
            f"json_array_elements_text(CAST({compiler.process(element.ids, **kw)} AS JSON)))")


class _RegexSearch(_ColumnElement):
    """``re.search(pattern, column)`` in SQL: SQLite's ``REGEXP`` (the registered Python function),
    PostgreSQL's ``~`` with the pattern translated (:func:`postgres_regex`)."""

    type = Boolean()
    inherit_cache = False  # the bound pattern depends on the dialect it is compiled for

    def __init__(self, column: Any, pattern: str):
        self.column = column
        self.pattern = pattern


@compiles(_RegexSearch)
def _regex_search(element: _RegexSearch, compiler: Any, **kw: Any) -> str:
    return f"{compiler.process(element.column, **kw)} REGEXP {compiler.process(bindparam(None, element.pattern), **kw)}"


@compiles(_RegexSearch, "postgresql")
def _regex_search_postgresql(element: _RegexSearch, compiler: Any, **kw: Any) -> str:
    pattern = bindparam(None, postgres_regex(element.pattern))
    return f"{compiler.process(element.column, **kw)} ~ {compiler.process(pattern, **kw)}"


# ---- matchers -------------------------------------------------------------------------------


def _as_is(value: str) -> str:
    return value


def matcher_clause(matcher: Matcher, column: ColumnElement[Any]) -> ColumnElement[bool]:
    """Two-valued SQL for ``matcher.test(column)`` (a NULL column is false, not NULL).

    A path column (:class:`~phototag.db.models.FsPath`) stores a file name that is not UTF-8 in
    an escaped form; the values compared with it are escaped the same way, so ``path:`` finds
    such names too (a regex or glob sees each undecodable byte as three characters there)."""
    present = column.is_not(None)
    stored = encode_path if isinstance(getattr(column, "type", None), FsPath) else _as_is
    if isinstance(matcher, Fold):
        cond = func.phototag_fold(column) == bindparam(None, stored(fold(matcher.value)))
    elif isinstance(matcher, Exact):
        cond = column == bindparam(None, stored(matcher.value))
    elif isinstance(matcher, Contains):
        cond = _instr(func.phototag_fold(column), bindparam(None, stored(fold(matcher.value)))) > 0
    elif isinstance(matcher, Regex):
        cond = _RegexSearch(column, stored(matcher.pattern))
    elif isinstance(matcher, Prefix):
        dir_prefix = stored(matcher.dir_prefix)
        cond = or_(
            column == bindparam(None, stored(matcher.value)),
            func.substr(column, 1, bindparam(None, len(dir_prefix))) == bindparam(None, dir_prefix),
        )
    else:
        clause = getattr(matcher, "clause", None)
        if clause is None:
            raise TypeError(f"no SQL face for the matcher {matcher!r}")
        cond = clause(column)
    return and_(present, func.coalesce(cond, false()))


def _in_range(column: ColumnElement[Any], low: Any, high: Any, *, high_open: bool = False) -> ColumnElement[bool]:
    conds: list[ColumnElement[bool]] = [column.is_not(None)]
    if low is not None:
        conds.append(column >= low)
    if high is not None:
        conds.append(column < high if high_open else column <= high)
    return and_(*conds)


# ---- nodes ----------------------------------------------------------------------------------


@functools.singledispatch
def compile_node(node: Node) -> ColumnElement[bool]:
    """SQLAlchemy boolean clause over ``Photo`` for one node.

    Nodes from plugins either have a ``clause()`` method or register here with
    ``@compile_node.register``.
    """
    clause = getattr(node, "clause", None)
    if clause is None:
        raise TypeError(f"no SQL face for the query node {node!r}")
    return clause()


@compile_node.register
def _(node: All) -> ColumnElement[bool]:
    return true()


@compile_node.register
def _(node: And) -> ColumnElement[bool]:
    plan = _tag_driven(node)
    if plan is not None:
        return plan
    return and_(*(compile_node(i) for i in node.items))


# ---- tag terms ------------------------------------------------------------------------------
#
# A resolved tag term (``TagTerm.tag_ids`` set, see phototag.query.tags) compiles to plain id
# tests on photo_tags; in an AND group the one with the fewest rows *drives*:
#
#     photos.id IN (SELECT d.photo_id FROM photo_tags d
#                   WHERE d.tag_id IN (rarest)
#                     AND EXISTS (SELECT 1 FROM photo_tags x WHERE x.photo_id = d.photo_id
#                                 AND x.tag_id IN (other))            -- one per other tag term
#                     AND NOT EXISTS (…)                              -- one per ^tag term
#     ) AND <the group's other terms>
#
# SQLite walks the rarest tag's slice of the (tag_id, photo_id) index, probes the other tags
# in the same index and reads a photo row only for photos that have every tag. When only the
# first page is wanted, in path order, and most photos match (``dog`` alone, ``dog , cat``),
# resolve_tag_terms marks the terms ``drive=False``: each becomes a correlated EXISTS, and
# SQLite walks the photos in path order and stops at the page's end. Letting SQLite
# choose instead (one ``photos.id IN (…)`` per term) built a temporary table of a popular tag's
# whole posting list: 0.1-2 s instead of ~1 ms at a million photos (bench/bench_search.py).

#: above this many ids a term's id list travels as one JSON parameter (SQLite's variable limit)
_MAX_ID_PARAMS = 500


def _resolved(node: Node) -> TagTerm | None:
    return node if isinstance(node, TagTerm) and node.tag_ids is not None else None


def _ids_in(column: ColumnElement[Any], ids: frozenset[int]) -> ColumnElement[bool]:
    if len(ids) <= _MAX_ID_PARAMS:
        return column.in_(sorted(ids))
    return _InJsonIds(column, sorted(ids))


def _tag_rows(table: Any, node: TagTerm) -> list[ColumnElement[bool]]:
    """Conditions on one photo_tags row for the term (its tags; its score range)."""
    conds = [_ids_in(table.c.tag_id, node.tag_ids)]
    if node.score is not None:
        conds.append(_in_range(func.coalesce(table.c.score, literal(1.0)), node.score.low, node.score.high))
    return conds


def _has_tag(node: TagTerm, photo_id: ColumnElement[Any]) -> ColumnElement[bool]:
    """Correlated ``EXISTS``: the photo ``photo_id`` has one of the term's tags."""
    if not node.tag_ids:
        return false()
    x = PhotoTag.__table__.alias()
    return select(literal(1)).where(x.c.photo_id == photo_id, *_tag_rows(x, node)).exists()


def _tag_driven(node: And) -> ColumnElement[bool] | None:
    """The AND group driven by its rarest resolved tag term (None: it has none)."""
    positive = [(i, t) for i, item in enumerate(node.items) if (t := _resolved(item)) is not None]
    if any(not t.tag_ids for _, t in positive):
        return false()  # a term that names no tag at all
    positive = [(i, t) for i, t in positive if t.drive]
    if not positive:
        return None
    at, driver = min(positive, key=lambda p: (p[1].rows if p[1].rows is not None else float("inf"), p[0]))
    d = PhotoTag.__table__.alias()
    probes: list[ColumnElement[bool]] = []
    rest: list[ColumnElement[bool]] = []
    for i, item in enumerate(node.items):
        if i == at:
            continue
        if (tag := _resolved(item)) is not None:
            probes.append(_has_tag(tag, d.c.photo_id))
        elif isinstance(item, Not) and (tag := _resolved(item.item)) is not None:
            if tag.tag_ids:
                probes.append(not_(_has_tag(tag, d.c.photo_id)))
        else:
            rest.append(compile_node(item))
    driven = select(d.c.photo_id).where(*_tag_rows(d, driver), *probes)
    return and_(_photos_with(driven), *rest)


@compile_node.register
def _(node: Or) -> ColumnElement[bool]:
    return or_(*(compile_node(i) for i in node.items))


@compile_node.register
def _(node: Not) -> ColumnElement[bool]:
    return not_(compile_node(node.item))


def _photos_with(subquery: Any) -> ColumnElement[bool]:
    """``photos.id IN (subquery)``: uncorrelated, so SQLite evaluates it once."""
    return Photo.id.in_(subquery)


@compile_node.register
def _(node: TagTerm) -> ColumnElement[bool]:
    if node.tag_ids is not None:
        if not node.tag_ids:
            return false()
        if not node.drive:
            return _has_tag(node, Photo.id)
        d = PhotoTag.__table__.alias()
        return _photos_with(select(d.c.photo_id).where(*_tag_rows(d, node)))
    named = select(Tag.id).where(or_(matcher_clause(node.matcher, Tag.name), matcher_clause(node.matcher, Tag.name_zh)))
    if node.tree:
        # the named tags and all their descendants; UNION (not UNION ALL) stops at cycles
        tree = named.cte(recursive=True)
        child = Tag.__table__.alias("child_tag")
        tree = tree.union(select(child.c.id).where(child.c.parent_id == tree.c.id))
        tag_ids = select(tree.c.id)
    else:
        tag_ids = named
    conds = [PhotoTag.tag_id.in_(tag_ids)]
    if node.score is not None:
        score = func.coalesce(PhotoTag.score, literal(1.0))
        conds.append(_in_range(score, node.score.low, node.score.high))
    return _photos_with(select(PhotoTag.photo_id).where(*conds))


_COLUMNS: dict[str, Any] = {
    "path": lambda: Photo.path,
    "camera_make": lambda: Photo.camera_make,
    "camera_model": lambda: Photo.camera_model,
    "camera": lambda: case(
        (
            and_(Photo.camera_make.is_not(None), Photo.camera_model.is_not(None)),
            Photo.camera_make + literal(" ") + Photo.camera_model,
        ),
        else_=None,
    ),
    "lens": lambda: Photo.lens,
    "format": lambda: Photo.format,
}


@compile_node.register
def _(node: ColumnTerm) -> ColumnElement[bool]:
    return or_(*(matcher_clause(node.matcher, _COLUMNS[a]()) for a in node.attrs))


@compile_node.register
def _(node: NumberTerm) -> ColumnElement[bool]:
    column = getattr(Photo, node.attr)
    return _in_range(column, node.range.low, node.range.high)


@compile_node.register
def _(node: DateTerm) -> ColumnElement[bool]:
    column = getattr(Photo, node.attr)
    return _in_range(column, node.start, node.end, high_open=True)


@compile_node.register
def _(node: SourceTerm) -> ColumnElement[bool]:
    return _photos_with(select(PhotoTag.photo_id).where(PhotoTag.source == bindparam(None, node.source)))


@compile_node.register
def _(node: ModelTerm) -> ColumnElement[bool]:
    runs = select(ModelRun.id).where(
        or_(matcher_clause(node.matcher, ModelRun.model_name), matcher_clause(node.matcher, ModelRun.model_id))
    )
    return _photos_with(select(PhotoTag.photo_id).where(PhotoTag.model_run_id.in_(runs)))


@compile_node.register
def _(node: CaptionTerm) -> ColumnElement[bool]:
    return _photos_with(select(Caption.photo_id).where(matcher_clause(node.matcher, Caption.text)))


@compile_node.register
def _(node: UntaggedTerm) -> ColumnElement[bool]:
    tagged = _photos_with(select(PhotoTag.photo_id))
    return not_(tagged) if node.untagged else tagged


@compile_node.register
def _(node: StatusTerm) -> ColumnElement[bool]:
    if node.status == "any":
        return true()
    return Photo.status == bindparam(None, node.status)


@compile_node.register
def _(node: RankedTerm) -> ColumnElement[bool]:
    hits = node.require_hits()
    # one JSON parameter however many hits (no SQLite variable limit)
    return _InJsonIds(Photo.id, list(hits))


# ---- ordering -------------------------------------------------------------------------------


def order_clauses(sort: Sequence[Any]) -> list[Any]:
    """ORDER BY for sort keys (NULLs last either way); default path; ties broken by id."""
    out: list[Any] = []
    for key in sort or ():
        try:
            columns = sort_columns(key.name)
        except KeyError:
            raise QueryError(f"unknown sort key {key.name!r}") from None
        for column in columns:
            out.append(column.is_(None))  # false (0) before true (1): NULLs last
            out.append(column.desc() if key.descending else column.asc())
    if not sort:
        out.append(Photo.path.asc())
    out.append(Photo.id.asc())
    return out
