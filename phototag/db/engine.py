"""Opening the library database: engine, SQLite PRAGMAs, and Alembic upgrades with a backup first."""

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
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
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


ConnectionSetup = Callable[[sqlite3.Connection], None]
#: run on every new connection of a library engine, after the PRAGMAs (see :func:`on_new_connection`)
_connection_setups: list[ConnectionSetup] = []


def on_new_connection(setup: ConnectionSetup) -> ConnectionSetup:
    """Have ``setup(dbapi_conn)`` run on every SQLite connection a library engine opens from now on.

    How a layer above the database gives SQLite what its SQL needs without this layer knowing it:
    the query language registers its ``REGEXP`` and ``phototag_fold()`` functions when it is
    imported (:mod:`phototag.query.compile`). Registering the same function again does nothing;
    usable as a decorator."""
    if setup not in _connection_setups:
        _connection_setups.append(setup)
    return setup


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


def make_engine(path: Path) -> Engine:
    engine = create_engine(f"sqlite:///{path}", future=True, connect_args={"timeout": 30})
    event.listen(engine, "connect", _on_connect)
    return engine


@dataclass
class Database:
    path: Path
    engine: Engine
    sessionmaker: sessionmaker[Session]

    @contextlib.contextmanager
    def session(self, immediate: bool = False) -> Iterator[Session]:
        """A session whose transaction commits on success and rolls back on error.

        ``immediate``: the transaction starts with SQLite's ``BEGIN IMMEDIATE`` (the write lock, waiting
        up to busy_timeout for another writer), so that everything it reads stays true until it
        commits: a check-then-insert cannot race another process. Otherwise the driver begins the
        transaction at its first write, and reads before that see whatever was committed then."""
        with self.sessionmaker() as session, session.begin():
            if immediate:
                session.connection().exec_driver_sql("BEGIN IMMEDIATE")
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
                f"{self.path} is at schema revision {current}, which this phototag does not know "
                "(was it written by a newer phototag? upgrade phototag)"
            ) from exc
        return current

    def pending_revisions(self) -> list[str]:
        from alembic.script import ScriptDirectory

        script = ScriptDirectory.from_config(_alembic_config())
        current = self._known_revision(script)
        return [rev.revision for rev in script.iterate_revisions(script.get_current_head(), current)][::-1]

    def backup(self, label: str) -> Path:
        """Copy the database (consistent snapshot via SQLite's backup API) beside itself."""
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        target = self.path.with_name(f"{self.path.name}.{label}-{stamp}.bak")
        copy_database(self.path, target)
        return target

    def upgrade(self, revision: str = "head") -> Path | None:
        """Upgrade to ``revision``; back up first when the database already holds data.

        Returns the backup path (None when nothing needed upgrading or the DB was new). A revision
        this phototag does not know raises :class:`DatabaseError` before any backup is written."""
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
            # revision is read again; SQLite's DDL is transactional, so the upgrade is all or nothing.
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            now = MigrationContext.configure(conn).get_current_revision()
            if now == head_revision() and revision == "head":
                return backup_path
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
        return backup_path

    def dispose(self) -> None:
        self.engine.dispose()


def open_database(path: Path | str, upgrade: bool = True) -> Database:
    """Open (creating if needed) the library database at ``path``.

    With ``upgrade`` (the default) the schema is brought to the head revision, after a backup; a
    database already at the head is opened without importing alembic."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatabaseError(f"cannot create {path.parent}: {exc}") from exc
    engine = make_engine(path)
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
        raise DatabaseError(f"cannot open library database {path}: {exc}") from exc
    return db
