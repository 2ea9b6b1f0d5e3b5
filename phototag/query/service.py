"""Running a query against the library: what ``phototag search`` calls."""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from phototag.db.models import Photo
from phototag.query.compile import install_postgres_functions, install_sqlite_functions
from phototag.query.parse import Query, parse

#: ``resolver(session, argument) -> [(photo_id, score), …]`` best first; ``argument`` is the
#: path (``similar:PATH``) or the text (``~"…"``). See phototag.search.
Resolver = Callable[[Session, str], Iterable[tuple[int, float]]]


@dataclass(frozen=True)
class Hit:
    photo_id: int
    score: float | None  #: the first similar:/~text term's score; None without one


def parse_query(source: str | Sequence[str] | Query, **kwargs) -> Query:
    """Parse a query string, or the CLI's list of words (a Query passes through)."""
    if isinstance(source, Query):
        return source
    return parse(source, **kwargs)


def ensure_sqlite_functions(session: Session) -> None:
    """Register REGEXP/phototag_fold on the session's connection if it is SQLite (cheap). On
    PostgreSQL, make sure the database has ``phototag_fold`` once per engine (the library engine's
    new connections do too, :func:`phototag.query.compile.install_postgres_functions`, but a
    connection opened before this package was imported did not), on a connection of its own."""
    conn = session.connection()
    if conn.dialect.name == "sqlite":
        install_sqlite_functions(conn.connection.dbapi_connection)
    elif conn.dialect.name == "postgresql" and conn.engine not in _postgres_ready:
        raw = conn.engine.raw_connection()
        try:
            install_postgres_functions(raw.dbapi_connection)
        finally:
            raw.close()
        _postgres_ready.add(conn.engine)


_postgres_ready: "weakref.WeakSet" = weakref.WeakSet()


def search_hits(
    session: Session,
    query: str | Sequence[str] | Query,
    *,
    limit: int | None = None,
    resolvers: Mapping[str, Resolver] | None = None,
) -> list[Hit]:
    """Matching photo ids in order.

    Order: the sort tokens if any; else the ranking of the first ``similar:``/``~text`` term
    (photos it did not rank, matched through another OR group, come after, by path); else by
    path.
    """
    q = parse_query(query)
    if limit is not None and limit < 0:
        raise ValueError("limit must be >= 0")
    ensure_sqlite_functions(session)
    q = q.resolve(session, dict(resolvers or {}))
    ranked = q.ranked_terms
    # a first page in path order can be read by walking the photos when most of them match
    q = q.resolve_tags(session, first=limit if not q.sort and not ranked else None)
    scores = ranked[0].hits if ranked else None
    stmt = select(Photo.id).where(q.where()).order_by(*q.order_by())
    if ranked and not q.sort:
        # the resolver's ranking first; photos matched only through another OR group follow
        # in the default order
        rank = {pid: i for i, pid in enumerate(scores)}
        ids = sorted(session.scalars(stmt), key=lambda pid: rank.get(pid, len(rank)))
        if limit is not None:
            ids = ids[:limit]
    else:
        if limit is not None:
            stmt = stmt.limit(limit)
        ids = list(session.scalars(stmt))
    return [Hit(pid, scores.get(pid) if scores is not None else None) for pid in ids]


def unknown_tag_names(session: Session, query: str | Sequence[str] | Query) -> list[str]:
    """The names that the query's plain tag terms (``dog``, ``tag:猫``, ``=Dog``) give and that no
    tag of the library has, in English or Chinese; a term with a regex, ``/`` or a score counts
    too when its name is unknown. For telling the user why nothing matched."""
    from phototag.query.matchers import Exact, Fold
    from phototag.query.nodes import TagTerm
    from phototag.query.tags import tag_catalog

    q = parse_query(query)
    catalog = tag_catalog(session)
    unknown: list[str] = []
    for node in q.expr.walk():
        if isinstance(node, TagTerm) and type(node.matcher) in (Fold, Exact):
            if not catalog.named(node.matcher) and node.matcher.value not in unknown:
                unknown.append(node.matcher.value)
    return unknown


def search_ids(session: Session, query, *, limit=None, resolvers=None) -> list[int]:
    return [h.photo_id for h in search_hits(session, query, limit=limit, resolvers=resolvers)]


def search(
    session: Session,
    query: str | Sequence[str] | Query,
    *,
    limit: int | None = None,
    resolvers: Mapping[str, Resolver] | None = None,
) -> list[Photo]:
    """The photos matching ``query``, in order (see :func:`search_hits`)."""
    ids = search_ids(session, query, limit=limit, resolvers=resolvers)
    if not ids:
        return []
    photos: dict[int, Photo] = {}
    chunk = 500
    for i in range(0, len(ids), chunk):
        part = ids[i : i + chunk]
        photos.update((p.id, p) for p in session.scalars(select(Photo).where(Photo.id.in_(part))))
    return [photos[i] for i in ids if i in photos]
