"""AST → SQLAlchemy: the SQL face of every query node.

Every user-supplied value travels as a bound parameter; nothing the user typed is formatted into
SQL text. Case-insensitive comparisons and regular expressions call two Python functions that
:func:`install_sqlite_functions` registers on each SQLite connection (the engine's ``connect``
event calls it; :func:`phototag.query.search` also makes sure), so SQL and :meth:`Node.match`
use the very same ``str.casefold`` and ``re.search``.
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

from phototag.db.models import Caption, ModelRun, Photo, PhotoTag, Tag
from phototag.query.errors import QueryError
from phototag.query.fields import sort_columns
from phototag.query.nodes import (
    All,
    And,
    CaptionTerm,
    ColumnTerm,
    Contains,
    DateTerm,
    Exact,
    Fold,
    Matcher,
    ModelTerm,
    Node,
    Not,
    NumberTerm,
    Or,
    Prefix,
    RankedTerm,
    Regex,
    SourceTerm,
    StatusTerm,
    TagTerm,
    UntaggedTerm,
    compiled_regex,
    fold,
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


def install_sqlite_functions(dbapi_conn: Any) -> None:
    """Register ``REGEXP`` and ``phototag_fold()`` on a ``sqlite3`` connection (idempotent).

    Call it from the engine's ``connect`` event::

        event.listen(engine, "connect", lambda conn, _rec: install_sqlite_functions(conn))
    """
    dbapi_conn.create_function("regexp", 2, _sql_regexp, deterministic=True)
    dbapi_conn.create_function(FOLD_FUNCTION, 1, _sql_fold, deterministic=True)


# ---- matchers -------------------------------------------------------------------------------


def matcher_clause(matcher: Matcher, column: ColumnElement[Any]) -> ColumnElement[bool]:
    """Two-valued SQL for ``matcher.test(column)`` (a NULL column is false, not NULL)."""
    present = column.is_not(None)
    if isinstance(matcher, Fold):
        cond = func.phototag_fold(column) == bindparam(None, fold(matcher.value))
    elif isinstance(matcher, Exact):
        cond = column == bindparam(None, matcher.value)
    elif isinstance(matcher, Contains):
        cond = func.instr(func.phototag_fold(column), bindparam(None, fold(matcher.value))) > 0
    elif isinstance(matcher, Regex):
        cond = column.regexp_match(bindparam(None, matcher.pattern))
    elif isinstance(matcher, Prefix):
        dir_prefix = matcher.dir_prefix
        cond = or_(
            column == bindparam(None, matcher.value),
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
    return and_(*(compile_node(i) for i in node.items))


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
