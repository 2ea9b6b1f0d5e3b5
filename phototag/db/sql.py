"""SQL that differs between SQLite and PostgreSQL, written once for both: an ``INSERT`` with
``ON CONFLICT`` and the larger of two values. The library, the queue and the query compiler ask
here instead of importing a dialect."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session


def dialect_of(session: Session) -> str:
    """``sqlite`` or ``postgresql``: the dialect of the database ``session`` talks to."""
    return session.get_bind().dialect.name


def insert(session: Session, table: Any):
    """An ``INSERT`` into ``table`` (a mapped class or a Table) for the session's database, with
    ``on_conflict_do_nothing(index_elements=…)``, ``on_conflict_do_update(…)`` and ``.excluded``
    (both dialects spell them alike)."""
    return (postgresql.insert if dialect_of(session) == "postgresql" else sqlite.insert)(table)


def greatest(session: Session, *values: Any):
    """The largest of ``values`` in SQL: SQLite's two-argument ``max()``, PostgreSQL's ``greatest()``
    (NULL-handling differs: callers pass non-NULL values)."""
    return (func.greatest if dialect_of(session) == "postgresql" else func.max)(*values)
