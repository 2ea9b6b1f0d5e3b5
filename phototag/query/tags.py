"""Tag names → tag ids before compiling, from a cached copy of the ``tags`` table.

A tag term used to compile to ``tag_id IN (SELECT id FROM tags WHERE phototag_fold(name) = ?)``:
SQLite then called the Python fold function on every tag name for every term, and, not knowing
which tag is rare, built a temporary table of a popular tag's whole posting list. At a million
photos that made a 3-term query take 0.1-2 s (bench/bench_search.py).

Here the names are matched in Python, with the very ``Matcher.test`` of the Python face, over a
process-wide copy of the tags table (id, name, Chinese name, parent); ``tag:animal/`` walks the
cached parent links down. Each resolved term also carries an estimate of how many photo_tags
rows it has, so the compiler can let the rarest term drive (see ``compile.py``).

The copy is checked against the database on every query: ``PRAGMA data_version`` and the
connection's ``total_changes`` say in microseconds that nothing was written since the last
check (recorded only while this connection holds no uncommitted writes, which a rollback could
undo unseen); when something was, one aggregate over ``tags`` (about 3 ms for 5000 tags) says whether
the tags changed.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import Any, Iterable

from sqlalchemy import text
from sqlalchemy.orm import Session

from phototag.query.matchers import Exact, Fold, Matcher, fold
from phototag.query.nodes import And, Node, Not, Or, StatusTerm, TagTerm, transform

#: rows counted per tag when estimating how rare it is: first at most COUNT_FIRST; only when every
#: tag term of an AND group has that many, again up to COUNT_MORE, to tell popular from very
#: popular (counting a tag's index slice costs ~30 ns a row)
COUNT_FIRST = 5_000
COUNT_MORE = 200_000
#: seconds a tag's row count is trusted (it only steers the plan, never the answer)
COUNT_TTL = 300.0

#: an aggregate, not a hash (~3 ms for 5000 tags, run only after a write): a rename by another
#: program that keeps the length and the first, second and last characters of the name (the
#: length and first character of the Chinese name) goes unseen; phototag itself never renames a
#: tag, and forget_tag_catalogs() drops the copies
_FINGERPRINT_SQL = text(
    "SELECT count(*), max(id), total(length(name) * id), total(length(name_zh) * id), "
    "total(id * coalesce(parent_id, -1)), "
    "total(unicode(name) * id), total(unicode(substr(name, 2)) * id), total(unicode(substr(name, -1)) * id), "
    "total(unicode(name_zh) * id) "
    "FROM tags"
)
#: the same aggregate in PostgreSQL's words (no total() or unicode(); right(x, 1) for substr(x, -1))
_FINGERPRINT_SQL_POSTGRESQL = text(
    "SELECT count(*), max(id), sum(length(name) * id::float8), sum(length(name_zh) * id::float8), "
    "sum(id * coalesce(parent_id, -1)::float8), "
    "sum(ascii(name) * id::float8), sum(ascii(substr(name, 2)) * id::float8), sum(ascii(right(name, 1)) * id::float8), "
    "sum(ascii(name_zh) * id::float8) "
    "FROM tags"
)
_COUNT_SQL = text("SELECT count(*) FROM (SELECT 1 FROM photo_tags WHERE tag_id = :tag_id LIMIT :cap) AS capped")


@dataclass
class TagCatalog:
    """The tags table in memory: names (as typed and folded) → ids, and the parent tree."""

    rows: list[tuple[int, str, str | None, int | None]]
    fingerprint: tuple = ()
    by_fold: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))
    by_exact: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))
    children: dict[int, list[int]] = field(default_factory=lambda: defaultdict(list))
    counts: dict[int, tuple[int, int, float]] = field(default_factory=dict)  #: id → (rows, cap, when)

    def __post_init__(self) -> None:
        for tag_id, name, name_zh, parent_id in self.rows:
            for value in (name, name_zh):
                if value is not None:
                    self.by_fold[fold(value)].add(tag_id)
                    self.by_exact[value].add(tag_id)
            if parent_id is not None:
                self.children[parent_id].append(tag_id)

    def named(self, matcher: Matcher) -> set[int] | None:
        """Ids of the tags whose English or Chinese name passes ``matcher.test`` (None: a
        matcher without a Python test, which stays with its SQL face)."""
        if type(matcher) is Fold:
            return set(self.by_fold.get(fold(matcher.value), ()))
        if type(matcher) is Exact:
            return set(self.by_exact.get(matcher.value, ()))
        try:
            return {
                tag_id
                for tag_id, name, name_zh, _ in self.rows
                if matcher.test(name) or matcher.test(name_zh)
            }
        except NotImplementedError:
            return None

    def with_descendants(self, ids: Iterable[int]) -> set[int]:
        """The tags and everything below them (a parent cycle is walked once)."""
        out = set(ids)
        todo = list(out)
        while todo:
            for child in self.children.get(todo.pop(), ()):
                if child not in out:
                    out.add(child)
                    todo.append(child)
        return out

    def rows_estimate(self, session: Session, ids: Iterable[int], cap: int = COUNT_FIRST) -> int:
        """photo_tags rows of these tags, each counted up to ``cap`` (cached)."""
        now = time.monotonic()
        total = 0
        for tag_id in ids:
            cached = self.counts.get(tag_id)  # (rows, the cap it was counted with, when)
            if cached is None or now - cached[2] > COUNT_TTL or (cached[0] >= cached[1] and cached[1] < cap):
                n = session.execute(_COUNT_SQL, {"tag_id": tag_id, "cap": cap}).scalar_one()
                cached = self.counts[tag_id] = (int(n), cap, now)
            total += min(cached[0], cap)
        return total


_lock = threading.Lock()
_catalogs: dict[Any, TagCatalog] = {}  # database file (or connection) → catalog
_INFO_KEY = "phototag.query.tag_catalog"
_generation = 0  # bumped by forget_tag_catalogs(): connections' "nothing changed" notes expire


def tag_catalog(session: Session) -> TagCatalog:
    """The (cached) catalog of the session's database, as the session sees it now."""
    if session.autoflush:
        session.flush()  # tags added in this session count, as they would in SQL
    conn = session.connection()
    fairy = conn.connection
    info = fairy.info
    stamp = None
    if conn.dialect.name == "sqlite":
        version = conn.exec_driver_sql("PRAGMA data_version").scalar()
        stamp = (_generation, version, getattr(fairy.dbapi_connection, "total_changes", None))
        seen = info.get(_INFO_KEY)
        if seen is not None and seen[0] == stamp and stamp[2] is not None:
            return seen[1]  # nothing written by anyone since this connection last looked
        db_file = next((row[2] for row in conn.exec_driver_sql("PRAGMA database_list") if row[1] == "main"), "")
        key: Any = db_file or ("connection", id(fairy.dbapi_connection))
    else:
        key = ("engine", str(conn.engine.url))
    fingerprint = tuple(session.execute(
        _FINGERPRINT_SQL_POSTGRESQL if conn.dialect.name == "postgresql" else _FINGERPRINT_SQL).one())
    with _lock:
        catalog = _catalogs.get(key)
    if catalog is None or catalog.fingerprint != fingerprint:
        rows = [tuple(r) for r in session.execute(text("SELECT id, name, name_zh, parent_id FROM tags"))]
        catalog = TagCatalog(rows, fingerprint)
        with _lock:
            _catalogs[key] = catalog
    if stamp is not None and not getattr(fairy.dbapi_connection, "in_transaction", True):
        # only with no uncommitted writes of our own: a rollback does not lower total_changes
        info[_INFO_KEY] = (stamp, catalog)
    else:
        info.pop(_INFO_KEY, None)
    return catalog


def resolve_tag_terms(expr: Node, session: Session, *, first: int | None = None) -> Node:
    """``expr`` with every tag term carrying its tag ids and a row estimate (see TagTerm).

    ``first``: only that many results are wanted, in path order (the default order); when most
    photos match, the terms are then marked not to drive (see :func:`prefer_scan`).
    """
    if not any(isinstance(n, TagTerm) and n.tag_ids is None for n in expr.walk()):
        return expr
    catalog = tag_catalog(session)

    def resolve(node: Node) -> Node | None:
        if not isinstance(node, TagTerm) or node.tag_ids is not None:
            return None
        ids = catalog.named(node.matcher)
        if ids is None:
            return None
        if node.tree:
            ids = catalog.with_descendants(ids)
        return node.resolved(frozenset(ids), catalog.rows_estimate(session, ids))

    def count_more(node: Node) -> Node | None:
        # the rarest term of a group is known unless every one of them reached COUNT_FIRST
        if not isinstance(node, And):
            return None
        tags = [i for i in node.items if _is_resolved(i)]
        if len(tags) < 2 or any(t.rows is None or t.rows < COUNT_FIRST for t in tags):
            return None
        return replace(node, items=tuple(_more(i, catalog, session) if _is_resolved(i) else i for i in node.items))

    expr = transform(transform(expr, resolve), count_more)
    if first is not None and prefer_scan(expr, catalog, session, first):
        expr = transform(expr, lambda n: replace(n, drive=False) if _is_resolved(n) else None)
    return expr


def _is_resolved(node: Node) -> bool:
    return isinstance(node, TagTerm) and node.tag_ids is not None


def _more(term: TagTerm, catalog: TagCatalog, session: Session) -> TagTerm:
    if term.rows is not None and term.rows < COUNT_FIRST:
        return term  # already exact
    return term.resolved(term.tag_ids, catalog.rows_estimate(session, term.tag_ids, COUNT_MORE))


def prefer_scan(expr: Node, catalog: TagCatalog, session: Session, first: int) -> bool:
    """Whether walking the photos in path order beats driving by the rarest tag, for the first
    ``first`` results of a query made only of (negated) tag terms and status tests.

    Rough costs in index steps, tags taken as independent: driving reads the rarest tag's
    rows, probing each, plus a photo row and a sort step per match; scanning reads
    ``first / density`` photos, probing each. Scanning must win by 2x: its worst case (a
    sparse answer) walks every photo. A first look uses the counts at hand (a tag counted
    exactly below COUNT_FIRST bounds its group); only when that does not settle it are the
    popular tags counted further.
    """
    groups = expr.items if isinstance(expr, Or) else (expr,)
    split = []
    for group in groups:
        items = group.items if isinstance(group, And) else (group,)
        positive = [i for i in items if _is_resolved(i)]
        negative = [i.item for i in items if isinstance(i, Not) and _is_resolved(i.item)]
        if not positive or len(positive) + len(negative) + sum(isinstance(i, StatusTerm) for i in items) < len(items):
            return False  # only negations, or a test whose selectivity is unknown here
        split.append((positive, negative))
    n = session.execute(text("SELECT max(id) FROM photos")).scalar() or 0
    if n <= 0 or first <= 0:
        return False

    def costs(refine: bool) -> tuple[float, float]:
        density, drive_cost, probes = 0.0, 0.0, 0
        for positive, negative in split:
            if refine:
                positive = [_more(t, catalog, session) for t in positive]
                negative = [_more(t, catalog, session) for t in negative]
            exact = [t.rows or 0 for t in positive if (t.rows or 0) < COUNT_FIRST]
            terms = len(positive) + len(negative)
            probes = max(probes, terms)
            if not refine:
                # at most as dense as its rarest counted tag, as costly as driving all of it
                share = min(exact) / n if exact else 1.0
                rarest = min(exact) if exact else n
                density += share
                drive_cost += rarest * terms + 4 * rarest
                continue
            share = 1.0
            for t in positive:
                share *= min(1.0, (t.rows or 0) / n)
            for t in negative:
                share *= max(0.0, 1.0 - (t.rows or 0) / n)
            density += share
            drive_cost += min(t.rows or 0 for t in positive) * terms + 4 * n * share
        density = min(1.0, density)
        scan_cost = (min(n, first / density) if density > 0 else n) * (2 + probes)
        return scan_cost, drive_cost

    scan_cost, drive_cost = costs(refine=False)  # the most a scan could gain
    if 2 * scan_cost >= drive_cost:
        return False
    scan_cost, drive_cost = costs(refine=True)
    return 2 * scan_cost < drive_cost


def forget_tag_catalogs() -> None:
    """Drop every cached catalog (tests; a process that rewrote tags behind SQLite's back)."""
    global _generation
    with _lock:
        _catalogs.clear()
        _generation += 1
