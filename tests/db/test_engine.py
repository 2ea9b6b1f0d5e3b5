"""The library database: Alembic revisions match the ORM, upgrades keep data and back up first."""

import sqlite3

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from phototag.db.engine import _alembic_config, head_revision, make_engine, open_database
from phototag.db.models import Base


def test_new_database_is_at_head_with_wal_and_foreign_keys(tmp_path):
    db = open_database(tmp_path / "lib" / "phototag.db")
    assert db.current_revision() == head_revision() == "0005"
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    db.dispose()


def test_migrations_describe_exactly_the_orm_schema(tmp_path):
    db = open_database(tmp_path / "phototag.db")
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    db.dispose()
    assert diff == []


def test_database_created_by_revision_0001_upgrades_cleanly(tmp_path):
    path = tmp_path / "phototag.db"
    engine = make_engine(path)
    cfg = _alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
    engine.dispose()
    con = sqlite3.connect(path)
    con.execute(
        "INSERT INTO photos (path, status, added_at, updated_at, sha256) "
        "VALUES ('/p/a.jpg', 'ok', '2024-01-01', '2024-01-01', 'abc')"
    )
    con.execute("INSERT INTO tags (name) VALUES ('cat')")
    con.execute(
        "INSERT INTO photo_tags (photo_id, tag_id, source, score, created_at) VALUES (1, 1, 'manual', 1.0, '2024-01-01')"
    )
    con.commit()
    con.close()

    db = open_database(path)
    assert db.current_revision() == "0005"
    backups = list(tmp_path.glob("phototag.db.pre-0001-*.bak"))
    assert len(backups) == 1
    old = sqlite3.connect(backups[0])
    assert old.execute("SELECT path FROM photos").fetchall() == [("/p/a.jpg",)]
    old.close()
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT path FROM photos").fetchall() == [("/p/a.jpg",)]
        assert conn.exec_driver_sql("SELECT count(*) FROM work_queue").scalar() == 0
    db.dispose()


def test_not_a_database_is_a_clear_error(tmp_path):
    import pytest

    from phototag.db.engine import DatabaseError

    path = tmp_path / "phototag.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(DatabaseError, match="cannot open library database"):
        open_database(path)


def test_database_from_a_newer_phototag_is_refused_without_writing_a_backup(tmp_path):
    import pytest

    from phototag.db.engine import DatabaseError

    path = tmp_path / "phototag.db"
    open_database(path).dispose()
    con = sqlite3.connect(path)
    con.execute("UPDATE alembic_version SET version_num = '9999'")
    con.commit()
    con.close()
    for _ in range(2):
        with pytest.raises(DatabaseError, match="9999.*newer phototag"):
            open_database(path)
    db = open_database(path, upgrade=False)
    with pytest.raises(DatabaseError, match="newer phototag"):
        db.pending_revisions()
    db.dispose()
    assert list(tmp_path.glob("*.bak")) == []


def test_a_failed_copy_leaves_no_file_under_the_backup_name(tmp_path):
    import pytest

    from phototag.db.engine import copy_database

    source = tmp_path / "phototag.db"
    source.write_bytes(b"this is not an SQLite database" * 100)
    with pytest.raises(sqlite3.DatabaseError):
        copy_database(source, tmp_path / "copy.bak")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["phototag.db"]


def test_processes_opening_a_new_library_at_once_create_it_once(tmp_path):
    """Two scans (or a scan and the watcher) started on a new home at the same moment: before, both
    ran the initial migration and one failed with "table … already exists"."""
    import subprocess
    import sys

    path = tmp_path / "phototag.db"
    code = ("import sys, time\nfrom phototag.db.engine import open_database\n"
            "time.sleep(max(0.0, float(sys.argv[2]) - time.time()))\nopen_database(sys.argv[1]).dispose()\n")
    import time

    start = time.time() + 3.0  # all imported by then: they open the file within a few ms of each other
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path), str(start)], stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, errors
    db = open_database(path)
    assert db.current_revision() == head_revision()
    db.dispose()


def test_the_database_layer_does_not_import_the_query_language(tmp_path):
    """db/ is below query/: opening (and creating) a library imports nothing of phototag.query."""
    import subprocess
    import sys

    code = ("import sys\nfrom phototag.db.engine import open_database\n"
            "db = open_database(sys.argv[1])\n"
            "with db.engine.connect() as conn: conn.exec_driver_sql('SELECT 1')\n"
            "db.dispose()\n"
            "assert not [m for m in sys.modules if m.startswith('phototag.query')], sorted(sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "phototag.db")], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr


def test_connection_setups_run_on_each_new_connection_once_registered(tmp_path):
    """The query package's REGEXP/phototag_fold reach every library connection through the hook."""
    from phototag.db import engine as engine_module
    from phototag.query.compile import install_sqlite_functions

    assert install_sqlite_functions in engine_module._connection_setups  # registered on import
    seen = []

    def setup(conn):
        seen.append(conn)

    assert engine_module.on_new_connection(setup) is setup
    engine_module.on_new_connection(setup)  # twice: still runs once per connection
    try:
        db = open_database(tmp_path / "phototag.db")
        with db.engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT 'Hund' REGEXP 'un', phototag_fold('ÄRGER')").one() == (1, "ärger")
        db.dispose()
    finally:
        engine_module._connection_setups.remove(setup)
    assert len(seen) >= 1 and len(seen) == len({id(c) for c in seen})


def test_a_backup_is_written_beside_the_database_under_a_temp_name_first(tmp_path):
    """copy_database goes through phototag.atomic: the backup appears whole, no temp file is left."""
    from phototag.db.engine import copy_database

    db = open_database(tmp_path / "phototag.db")
    with db.session() as session:
        session.connection().exec_driver_sql("INSERT INTO tags (name) VALUES ('cat')")
    copy_database(db.path, tmp_path / "copy.bak")
    db.dispose()
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("phototag.db")) == ["copy.bak"]
    copy = sqlite3.connect(tmp_path / "copy.bak")
    assert copy.execute("SELECT name FROM tags").fetchall() == [("cat",)]
    copy.close()


def test_a_library_file_that_is_not_a_database_is_one_line_and_exit_2(tmp_path):
    """DatabaseError is a PhototagError: the CLI prints its message, no traceback."""
    import os
    import subprocess
    import sys

    home = tmp_path / "home"
    home.mkdir()
    (home / "phototag.db").write_bytes(b"not a database, just bytes" * 100)
    done = subprocess.run([sys.executable, "-m", "phototag", "tags"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PHOTOTAG_HOME": str(home)})
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: cannot open library database") and "Traceback" not in done.stderr
