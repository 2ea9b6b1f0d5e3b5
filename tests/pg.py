"""A real PostgreSQL server for tests and benches: a fresh, empty database per test (or module).

The server comes from ``PT_TEST_POSTGRES_URL`` (an SQLAlchemy URL of a superuser on a maintenance
database, e.g. ``postgresql+psycopg://postgres@127.0.0.1:5432/postgres``; ``.ci/run`` exports it),
otherwise a private server is started once per process: ``initdb`` into a temp dir as the
``postgres`` user (PostgreSQL refuses to run as root), ``pg_ctl start`` on a free port of 127.0.0.1,
stopped when the process exits.

Tests::

    from pg import pg_url            # a function-scoped fixture: a fresh database's URL

    def test_x(pg_url): ...

or ``pg_database()`` (a context manager) where a fixture of another scope needs one. Benches import
:func:`pg_database` too (``sys.path`` must hold ``tests/``). When no server can be had, the fixture
skips with the reason, or fails when ``CI`` is set (CI must not silently skip the PostgreSQL tests).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Iterator

import pytest

ENV = "PT_TEST_POSTGRES_URL"
PG_BIN = Path("/usr/lib/postgresql/15/bin")


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server can be reached or started here."""


_lock = threading.Lock()
_server_url: str | None = None
_server_error: str | None = None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres(argv: list[str]) -> list[str]:
    """``argv`` run as the ``postgres`` user when we are root (initdb/postgres refuse root)."""
    if os.geteuid() != 0:
        return argv
    runuser = shutil.which("runuser")
    if runuser is None:
        raise PostgresUnavailable("running as root and no runuser to start PostgreSQL as 'postgres'")
    return [runuser, "-u", "postgres", "--", *argv]


def _start_private_server() -> str:
    bindir = Path(os.environ.get("PT_TEST_POSTGRES_BIN", PG_BIN))
    if not (bindir / "initdb").exists() or not (bindir / "pg_ctl").exists():
        raise PostgresUnavailable(f"no {ENV} and no PostgreSQL binaries in {bindir} (apt-get install postgresql)")
    root = Path(tempfile.mkdtemp(prefix="pt-pg-"))
    data, log = root / "data", root / "server.log"
    if os.geteuid() == 0:
        import pwd

        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(root, ignore_errors=True)
            raise PostgresUnavailable("running as root and there is no 'postgres' user") from None
        os.chown(root, pw.pw_uid, pw.pw_gid)
    run = dict(capture_output=True, text=True, timeout=120)
    res = subprocess.run(_as_postgres([str(bindir / "initdb"), "-D", str(data), "-U", "postgres",
                                       "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"]), **run)
    if res.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        raise PostgresUnavailable(f"initdb failed: {res.stderr.strip() or res.stdout.strip()}")
    port = _free_port()
    # a test server: durability off (fsync, synchronous_commit), sockets in its own dir
    options = (f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off "
               "-c full_page_writes=off -c max_connections=200")
    res = subprocess.run(_as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w",
                                       "-t", "60", "-o", options, "start"]), **run)
    if res.returncode != 0:
        detail = log.read_text(errors="replace")[-2000:] if log.exists() else res.stderr
        shutil.rmtree(root, ignore_errors=True)
        raise PostgresUnavailable(f"pg_ctl start failed: {detail.strip()}")

    def stop() -> None:
        subprocess.run(_as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]),
                       capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)

    atexit.register(stop)
    return f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"


def server_url() -> str:
    """The URL of a superuser's maintenance database on a running server (started at most once per
    process). Raises :class:`PostgresUnavailable` with the reason when there is none."""
    global _server_url, _server_error
    with _lock:
        if _server_url is None and _server_error is None:
            try:
                _server_url = os.environ.get(ENV) or _start_private_server()
            except PostgresUnavailable as exc:
                _server_error = str(exc)
            except (OSError, subprocess.SubprocessError) as exc:
                _server_error = f"cannot start PostgreSQL: {exc}"
        if _server_url is None:
            raise PostgresUnavailable(_server_error)
        return _server_url


def _admin_engine(url: str):
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    # client_encoding: a cluster initdb'd in the C locale is SQL_ASCII, and psycopg then gives bytes
    return create_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool,
                         connect_args={"client_encoding": "utf8"})


@contextlib.contextmanager
def pg_database(prefix: str = "pt") -> Iterator[str]:
    """A fresh, empty database on the server; yields its SQLAlchemy URL, drops it afterwards
    (connections still open to it are ended)."""
    from sqlalchemy.engine import make_url

    base = server_url()
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = _admin_engine(base)
    try:
        with admin.connect() as conn:
            # what docs/postgresql.md asks users for: text sorts by code point, as on SQLite
            conn.exec_driver_sql(f"CREATE DATABASE \"{name}\" TEMPLATE template0 ENCODING 'UTF8' "
                                 "LC_COLLATE 'C' LC_CTYPE 'C.UTF-8'")
        yield make_url(base).set(database=name).render_as_string(hide_password=False)
    finally:
        try:
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            admin.dispose()


def require_server() -> str:
    """:func:`server_url`, or skip the test (fail it when ``CI`` is set) with the reason."""
    try:
        return server_url()
    except PostgresUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is required in CI: {exc}")
        pytest.skip(f"no PostgreSQL: {exc}")


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database (SQLAlchemy URL, ``postgresql+psycopg://...``) for one test."""
    require_server()
    with pg_database() as url:
        yield url


@pytest.fixture(scope="module")
def pg_module_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database shared by one test module."""
    require_server()
    with pg_database() as url:
        yield url
