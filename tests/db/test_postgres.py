"""The library on a real PostgreSQL server (tests/pg.py): migrations, concurrent openers, the write
lock, file names that are not UTF-8, the ``database_url`` setting, and the CLI giving the same JSON
as on SQLite."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from conftest import cli, save_sample
from pg import pg_url  # noqa: F401 (a fixture)

from phototag.db.engine import DatabaseError, _alembic_config, head_revision, make_engine, open_database
from phototag.db.models import Base


def test_a_new_database_is_created_at_head_and_matches_the_orm(pg_url):  # noqa: F811
    db = open_database(pg_url)
    assert db.dialect == "postgresql" and db.path is None
    assert db.current_revision() == head_revision()
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    db.dispose()
    assert diff == []


def test_every_revision_upgrades_a_postgresql_database_with_data(pg_url):  # noqa: F811
    engine = make_engine(pg_url)
    cfg = _alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
        conn.exec_driver_sql("INSERT INTO photos (path, status, added_at, updated_at, sha256) "
                             "VALUES ('/p/a.jpg', 'ok', '2024-01-01', '2024-01-01', 'abc')")
        conn.exec_driver_sql("INSERT INTO tags (name) VALUES ('cat')")
        conn.exec_driver_sql("INSERT INTO photo_tags (photo_id, tag_id, source, score, created_at) "
                             "VALUES (1, 1, 'manual', 1.0, '2024-01-01')")
    engine.dispose()
    db = open_database(pg_url)
    assert db.current_revision() == head_revision()
    assert db.upgrade() is None  # nothing to do, and no backup of a server database
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT path FROM photos").fetchall() == [("/p/a.jpg",)]
        assert conn.exec_driver_sql("SELECT count(*) FROM photo_tags").scalar() == 1
        assert conn.exec_driver_sql("SELECT count(*) FROM work_queue").scalar() == 0
        # 0004's server default: a row written without the column gets 0
        conn.exec_driver_sql("INSERT INTO work_queue (path, reason, priority, attempts, enqueued_at) "
                             "VALUES ('/p/b.jpg', 'new', 0, 0, '2024-01-01')")
        assert conn.exec_driver_sql("SELECT failures FROM work_queue").scalar() == 0
        conn.rollback()
    db.dispose()


def test_processes_opening_a_new_postgresql_library_at_once_create_it_once(pg_url):  # noqa: F811
    code = ("import sys, time\nfrom phototag.db.engine import open_database\n"
            "time.sleep(max(0.0, float(sys.argv[2]) - time.time()))\nopen_database(sys.argv[1]).dispose()\n")
    start = time.time() + 3.0
    procs = [subprocess.Popen([sys.executable, "-c", code, pg_url, str(start)], stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 3, errors
    db = open_database(pg_url)
    assert db.current_revision() == head_revision()
    db.dispose()


def test_immediate_sections_run_one_at_a_time_across_connections(pg_url):  # noqa: F811
    """What SQLite's BEGIN IMMEDIATE gives the pipeline: a second writer waits for the first to commit."""
    db = open_database(pg_url)
    events: list[str] = []
    inside = threading.Event()

    def first():
        with db.session(immediate=True):
            events.append("first in")
            inside.set()
            time.sleep(0.5)
            events.append("first out")

    def second():
        inside.wait(10)
        with db.session(immediate=True):
            events.append("second in")

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    db.dispose()
    assert events == ["first in", "first out", "second in"]


def test_a_file_name_that_is_not_utf8_round_trips_and_is_found(tmp_path, pg_url):  # noqa: F811
    from phototag.config import load_settings
    from phototag.library import Library, PhotoFacts
    from phototag.query import search

    name = os.fsdecode(b"/photos/latin1_\xe9t\xe9 \xff\xfe.jpg")  # surrogates U+DCxx, as os.listdir gives
    lib = Library(load_settings(tmp_path / "home", environ={"PHOTOTAG_DATABASE_URL": pg_url}))
    try:
        with lib.session() as s:
            lib.upsert_photo(s, PhotoFacts(path=Path(name), root=Path("/photos"), size=1, mtime=1.0, sha256="0" * 64))
        with lib.session() as s:
            assert lib.photo_by_path(s, name).path == name
            assert [p.path for p in search(s, ["path:/photos"])] == [name]
            assert [p.path for p in search(s, ["path::t.\\udcff"])] == []  # a regex sees the stored escapes
            stored = s.connection().exec_driver_sql("SELECT path FROM photos").scalar()
        assert os.fsencode(name) == b"/photos/latin1_\xe9t\xe9 \xff\xfe.jpg" and "\uffff" in stored
    finally:
        lib.close()


def test_a_bad_database_url_is_one_clear_error(tmp_path):
    with pytest.raises(DatabaseError, match="not supported"):
        open_database("mysql://u@h/db")
    with socket_free_port() as port:
        with pytest.raises(DatabaseError, match=r"^cannot open library database postgresql\+psycopg://") as info:
            open_database(f"postgresql://nobody@127.0.0.1:{port}/phototag")
    assert "\n" not in str(info.value)


class socket_free_port:
    """A local port nothing listens on (while the context is open)."""

    def __enter__(self) -> int:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))  # bound, not listening: a connection is refused
        return self.sock.getsockname()[1]

    def __exit__(self, *exc) -> None:
        self.sock.close()


_VOLATILE = {"seconds", "model_seconds", "load_seconds", "tagging_seconds", "photos_per_second",
             "added_at", "updated_at", "tagged_at", "created_at", "started_at", "finished_at"}


def _stable(value):
    """JSON without the clock's values (durations, timestamps), which differ from run to run."""
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items() if k not in _VOLATILE}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    return value


def test_scan_search_and_show_give_the_same_json_on_postgresql_as_on_sqlite(tmp_path, pg_url, monkeypatch):  # noqa: F811
    folder = tmp_path / "Pictures"
    for name in ("chelsea", "coffee", "astronaut"):
        save_sample(name, folder / f"{name}.jpg", size=256)
    (folder / "notes.jpg").write_bytes(b"not a photo")
    results = {}
    for backend in ("sqlite", "postgresql"):
        if backend == "postgresql":
            monkeypatch.setenv("PHOTOTAG_DATABASE_URL", pg_url)
        home = tmp_path / f"home-{backend}"
        scan = cli(home, "scan", folder, "--format", "json").stdout
        runs = [json.loads(scan[scan.index("{"):])]
        for words in (["cat"], ["cat", ",", "cup"], ["path::ch.*\\.jpg$"], ["status:error"], []):
            runs.append(json.loads(cli(home, "search", *words, "--format", "json").stdout))
        for photo in sorted(folder.iterdir()):
            runs.append(json.loads(cli(home, "show", photo, "--format", "json").stdout))
        results[backend] = _stable(runs)
    assert not (tmp_path / "home-postgresql" / "phototag.db").exists()  # the library went to the server
    assert results["sqlite"][0]["new"] == 3 and results["sqlite"][0]["failed"] == 1
    assert results["sqlite"][1]  # the cat photo was found
    assert results["postgresql"] == results["sqlite"]


def test_db_status_upgrade_and_a_dry_run_retag_speak_of_the_server_database(tmp_path, pg_url, monkeypatch):  # noqa: F811
    """`db status`/`db upgrade` look at the database_url (not a SQLite file nobody uses), never show the
    password, and `retag --dry-run`, which copies a SQLite file, says what to do instead."""
    monkeypatch.setenv("PHOTOTAG_DATABASE_URL", pg_url)
    home = tmp_path / "home"
    before = json.loads(cli(home, "db", "status", "--format", "json").stdout)
    assert before["path"].startswith("postgresql+psycopg://") and before["revision"] is None
    assert "upgraded (new) →" in cli(home, "db", "upgrade").stdout
    after = json.loads(cli(home, "db", "status", "--format", "json").stdout)
    assert after["up_to_date"] and after["revision"] == head_revision()
    assert not (home / "phototag.db").exists()
    folder = tmp_path / "Pictures"
    save_sample("chelsea", folder / "chelsea.jpg", size=256)
    cli(home, "scan", folder)
    refused = cli(home, "retag", "--dry-run", code=1).exception  # the runner leaves main()'s catch out
    assert "SQLite library only" in str(refused) and refused.exit_code == 2
