"""Opening the library database: engine, SQLite PRAGMAs, and Alembic upgrades with a backup first.

The library is a SQLite file in the home (the default) or, with the ``database_url`` setting, a
PostgreSQL database shared by several processes and machines (``postgresql+psycopg://…``). What
differs between the two is decided here and in :mod:`phototag.db.sql`; the layers above write one
SQL for both."""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import re
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

import phototag_migrations
from phototag import atomic
from phototag.errors import PhototagError

if TYPE_CHECKING:  # alembic is imported only when a schema is read, checked or upgraded through it
    from alembic.config import Config as AlembicConfig
    from alembic.script import ScriptDirectory


class DatabaseError(PhototagError):
    """The library database cannot be opened or upgraded."""


def _alembic_config() -> AlembicConfig:
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(Path(phototag_migrations.__file__).parent))
    return cfg


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


_REVISION_LINE = re.compile(r"""^(down_revision|revision)\s*(?::[^=]*)?=\s*(None|"([^"]*)"|'([^']*)')\s*(?:#.*)?$""",
                            re.MULTILINE)


@functools.lru_cache(maxsize=1)
def _head_from_files() -> str | None:
    """The head revision read from the migration files' ``revision``/``down_revision`` lines, without
    importing alembic (opening a library that needs no upgrade should not pay for it). None when the
    files do not say it plainly (a merge, a missing line, two heads): the caller then asks alembic."""
    revisions: dict[str, str | None] = {}
    for file in sorted((Path(phototag_migrations.__file__).parent / "versions").glob("*.py")):
        if file.name == "__init__.py":
            continue
        values = {m.group(1): m.group(3) or m.group(4) for m in _REVISION_LINE.finditer(file.read_text("utf-8"))}
        if "revision" not in values or "down_revision" not in values or values["revision"] in revisions:
            return None
        revisions[values["revision"]] = values["down_revision"]
    heads = set(revisions) - set(revisions.values())
    return heads.pop() if len(heads) == 1 else None


def _stored_revision(conn) -> str | None:
    """The revision in the database's alembic_version table: None when it has no such table or
    not exactly one row (alembic then decides what that means)."""
    try:
        rows = conn.exec_driver_sql("SELECT version_num FROM alembic_version").fetchall()
    except Exception:  # no alembic_version table: a new (or foreign) database
        return None
    return rows[0][0] if len(rows) == 1 else None


ConnectionSetup = Callable[[object], None]
#: run on every new connection of a library engine of that dialect, after the PRAGMAs on SQLite
#: (see :func:`on_new_connection`)
_connection_setups: list[ConnectionSetup] = []  # SQLite's
_postgres_connection_setups: list[ConnectionSetup] = []


def on_new_connection(setup: ConnectionSetup | None = None, *, dialect: str = "sqlite"):
    """Have ``setup(dbapi_conn)`` run on every connection of ``dialect`` (``sqlite``: a
    ``sqlite3.Connection``; ``postgresql``: a ``psycopg.Connection``) a library engine opens from now on.

    How a layer above the database gives the database what its SQL needs without this layer knowing
    it: the query language registers its ``REGEXP`` and ``phototag_fold()`` functions on SQLite, and
    makes sure PostgreSQL has its ``phototag_fold()``, when it is imported
    (:mod:`phototag.query.compile`). A PostgreSQL setup must leave no transaction open (commit or
    roll back). Registering the same function again does nothing; usable as a decorator (with or
    without the ``dialect`` argument)."""
    if setup is None:
        return lambda fn: on_new_connection(fn, dialect=dialect)
    setups = _postgres_connection_setups if dialect == "postgresql" else _connection_setups
    if setup not in setups:
        setups.append(setup)
    return setup


def _on_connect_postgresql(dbapi_conn, _record) -> None:
    for setup in list(_postgres_connection_setups):
        setup(dbapi_conn)


def _on_connect(dbapi_conn: sqlite3.Connection, _record) -> None:
    cursor = dbapi_conn.cursor()
    # the wait for another process's lock first: switching a new library to WAL needs a lock that a
    # process creating the schema at the same moment holds (seen: "database is locked" after the
    # driver's default 5 s, with two scans starting on a new library on a busy machine)
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
    for setup in list(_connection_setups):
        setup(dbapi_conn)


def copy_database(source: Path, target: Path) -> None:
    """A consistent copy of a live SQLite file (SQLite's online backup API; WAL content included).

    Written to a temp file beside ``target`` and renamed into place (:func:`phototag.atomic.replacing`),
    so a failed copy (disk full) never leaves a truncated file under the backup's name."""
    src = sqlite3.connect(source)
    try:
        with atomic.replacing(target) as partial:
            dst = sqlite3.connect(partial)
            try:
                with dst:
                    src.backup(dst)
            finally:
                dst.close()
    finally:
        src.close()


#: the key of PostgreSQL's transaction-level advisory locks that stand in for SQLite's write lock: one
#: for ``session(immediate=True)`` sections, one for schema upgrades (any two fixed 64-bit numbers)
IMMEDIATE_LOCK = 0x70686F746F746167  # "phototag"
UPGRADE_LOCK = IMMEDIATE_LOCK + 1


def is_url(target: Path | str) -> bool:
    """Whether ``target`` is a database URL (``dialect[+driver]://…``) rather than a file path."""
    return isinstance(target, str) and "://" in target


def make_engine(target: Path | str) -> Engine:
    """An engine for a SQLite file (a path, with phototag's PRAGMAs on every connection) or a
    database URL (PostgreSQL: a small pool whose connections are checked before use, as a server
    may have closed them)."""
    if is_url(target):
        try:
            url = make_url(target)
        except ArgumentError as exc:
            # (not echoed: it may hold a password)
            raise DatabaseError("database_url is not a database URL (e.g. postgresql+psycopg://user@host:5432/phototag)") from exc
        if url.get_backend_name() == "sqlite":
            target = Path(url.database or "")
        elif url.get_backend_name() != "postgresql":
            raise DatabaseError(f"database_url: {url.get_backend_name()} is not supported "
                                "(a PostgreSQL URL, postgresql+psycopg://user@host:5432/name, or unset for SQLite)")
        else:
            if url.drivername == "postgresql":  # no driver named: psycopg 3 (a dependency), not psycopg2
                url = url.set(drivername="postgresql+psycopg")
            try:
                engine = create_engine(url, future=True, pool_size=5, max_overflow=10, pool_pre_ping=True,
                                       pool_recycle=3600)
            except ImportError as exc:
                raise DatabaseError(f"database_url: the driver for {url.drivername} is not installed: {exc}") from exc
            event.listen(engine, "connect", _on_connect_postgresql)
            return engine
    engine = create_engine(f"sqlite:///{target}", future=True, connect_args={"timeout": 30})
    event.listen(engine, "connect", _on_connect)
    return engine


def describe(target: Path | str) -> str:
    """How a library database is named in messages: its path, or its URL without the password."""
    if is_url(target):
        try:
            return make_url(target).render_as_string(hide_password=True)
        except ArgumentError:
            return "the database_url"
    return str(target)


def library_target(settings) -> Path | str:
    """Where the library of ``settings`` lives: its ``database_url`` when set, else the SQLite file
    in its home. Every command that opens a library asks this (one place decides)."""
    url = settings.get("database_url")
    return str(url) if url else settings.db_path


@dataclass
class Database:
    #: the SQLite file; None for a server database (see :attr:`url`)
    path: Path | None
    engine: Engine
    sessionmaker: sessionmaker[Session]

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.engine.dialect.name

    @property
    def url(self) -> str:
        """The database's URL, password hidden (for messages)."""
        return self.engine.url.render_as_string(hide_password=True)

    @property
    def name(self) -> str:
        """The database as messages name it: the SQLite file's path, or the URL."""
        return str(self.path) if self.path is not None else self.url

    @contextlib.contextmanager
    def session(self, immediate: bool = False) -> Iterator[Session]:
        """A session whose transaction commits on success and rolls back on error.

        ``immediate``: the transaction first takes the library's write lock, waiting for another
        writer, so that everything it reads stays true until it commits: a check-then-insert cannot
        race another process. On SQLite that is ``BEGIN IMMEDIATE`` (busy_timeout bounds the wait); on
        PostgreSQL a transaction-level advisory lock (:data:`IMMEDIATE_LOCK`) that every immediate
        section of every process on every machine takes, released at commit or rollback: immediate
        sections run one at a time, as on SQLite, and see everything committed before them.
        Otherwise the driver begins the transaction at its first write, and reads before that see
        whatever was committed then."""
        with self.sessionmaker() as session, session.begin():
            if immediate:
                conn = session.connection()
                if conn.dialect.name == "sqlite":
                    conn.exec_driver_sql("BEGIN IMMEDIATE")
                else:
                    conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({IMMEDIATE_LOCK})")
            yield session

    def current_revision(self) -> str | None:
        from alembic.runtime.migration import MigrationContext

        with self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def at_head(self) -> bool:
        """Whether the schema is at the head revision, answered without alembic (see
        :func:`_head_from_files`); False when in doubt, so that :meth:`upgrade` decides."""
        head = _head_from_files()
        if head is None:
            return False
        with self.engine.connect() as conn:
            return _stored_revision(conn) == head

    def _known_revision(self, script: ScriptDirectory) -> str | None:
        """The database's revision, or a clear error when this phototag does not know it."""
        from alembic.util import CommandError

        current = self.current_revision()
        try:
            script.get_revision(current)
        except CommandError as exc:
            raise DatabaseError(
                f"{self.name} is at schema revision {current}, which this phototag does not know "
                "(was it written by a newer phototag? upgrade phototag)"
            ) from exc
        return current

    def pending_revisions(self) -> list[str]:
        from alembic.script import ScriptDirectory

        script = ScriptDirectory.from_config(_alembic_config())
        current = self._known_revision(script)
        return [rev.revision for rev in script.iterate_revisions(script.get_current_head(), current)][::-1]

    def backup(self, label: str) -> Path | None:
        """Copy the database (consistent snapshot via SQLite's backup API) beside itself. None on a
        server database: back that up with its own tools (``pg_dump``; docs/postgresql.md)."""
        if self.path is None:
            return None
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        target = self.path.with_name(f"{self.path.name}.{label}-{stamp}.bak")
        copy_database(self.path, target)
        return target

    def upgrade(self, revision: str = "head") -> Path | None:
        """Upgrade to ``revision``; back up first when the database already holds data.

        Returns the backup path (None when nothing needed upgrading, the DB was new, or it is a server
        database, which phototag does not copy). A revision this phototag does not know raises
        :class:`DatabaseError` before any backup is written."""
        from alembic.runtime.migration import MigrationContext
        from alembic.script import ScriptDirectory

        current = self._known_revision(ScriptDirectory.from_config(_alembic_config()))
        if current == head_revision() and revision == "head":
            return None
        backup_path = self.backup(f"pre-{current}") if current is not None else None
        from alembic import command

        cfg = _alembic_config()
        with self.engine.begin() as conn:
            # one upgrade at a time: two processes opening a new (or old) library at once (two scans,
            # a scan and the watcher) must not both create its tables. Under the write lock the
            # revision is read again; SQLite's and PostgreSQL's DDL is transactional, so the upgrade is
            # all or nothing. PostgreSQL: an advisory lock held to the end of the transaction.
            if conn.dialect.name == "sqlite":
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            else:
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({UPGRADE_LOCK})")
            now = MigrationContext.configure(conn).get_current_revision()
            if now == head_revision() and revision == "head":
                return backup_path
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
        return backup_path

    def dispose(self) -> None:
        self.engine.dispose()


def open_database(path: Path | str, upgrade: bool = True) -> Database:
    """Open (creating if needed) the library database at ``path``: a SQLite file, or a database URL
    (:func:`library_target`; a PostgreSQL database must exist, its tables are created here).

    With ``upgrade`` (the default) the schema is brought to the head revision, after a backup (SQLite);
    a database already at the head is opened without importing alembic."""
    if is_url(path):
        engine = make_engine(path)
        path = None if engine.dialect.name != "sqlite" else Path(engine.url.database or "")
    else:
        path = Path(path)
        engine = None
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DatabaseError(f"cannot create {path.parent}: {exc}") from exc
        engine = engine or make_engine(path)
    db = Database(path=path, engine=engine, sessionmaker=sessionmaker(engine, expire_on_commit=False))
    try:
        for attempt in range(6):
            try:
                if upgrade and not db.at_head():
                    db.upgrade()
                else:
                    with engine.connect():
                        pass
                break
            except OperationalError as exc:
                # SQLite answers some lock conflicts at once, without waiting out busy_timeout (another
                # process opening or upgrading the same library this instant): try again, briefly
                if "locked" not in str(exc) or attempt == 5:
                    raise
                time.sleep(0.2 * (attempt + 1))
    except Exception as exc:  # sqlite3.DatabaseError: not a database, locked, …
        engine.dispose()
        if isinstance(exc, DatabaseError):
            raise
        raise DatabaseError(f"cannot open library database {db.name}: {_first_line(exc)}") from exc
    return db


def _first_line(exc: BaseException) -> str:
    """A driver error's first line (psycopg adds the SQL and a link to SQLAlchemy's docs below it)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
