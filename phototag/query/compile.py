"""AST → SQLAlchemy: the SQL face of every query node.

Every user-supplied value travels as a bound parameter; nothing the user typed is formatted into
SQL text. Case-insensitive comparisons and regular expressions call two Python functions that
:func:`install_sqlite_functions` registers on each SQLite connection (this module has the library
engine run it on every new connection, :func:`phototag.db.engine.on_new_connection`;
:func:`phototag.query.search` also makes sure), so SQL and :meth:`Node.match` use the very same
``str.casefold`` and ``re.search``. They are the query language's, not the database's: the
database layer never imports this package.
"""

from __future__ import annotations

import functools
import json
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
        cond = func.instr(func.phototag_fold(column), bindparam(None, stored(fold(matcher.value)))) > 0
    elif isinstance(matcher, Regex):
        cond = column.regexp_match(bindparam(None, stored(matcher.pattern)))
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
    values = func.json_each(bindparam(None, json.dumps(sorted(ids)))).table_valued("value")
    return column.in_(select(values.c.value))


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
    ids = func.json_each(bindparam(None, json.dumps(list(hits)))).table_valued("value")
    return _photos_with(select(ids.c.value))


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
