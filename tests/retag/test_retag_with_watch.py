"""`phototag retag` while `phototag watch` runs on the same library (issue 10.5): a photo that changes
meanwhile is tagged from its new content, once; nothing the re-tag does deletes the watcher's newer
queue row, and the watcher never tags a photo the re-tag holds."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from PIL import Image, ImageOps
from sqlalchemy import func, select
from watch.helpers import ColourTagger, queue_length, wait_for, watching, write_photo

from phototag.retag import service
from phototag.db.models import ModelRun, Photo, WorkItem
from phototag.pipeline import Pipeline

from .conftest import make_photos


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _stored_sha(lib, path: Path) -> str | None:
    with lib.session() as s:
        photo = lib.photo_by_path(s, path)
        return photo.sha256 if photo is not None else None


class GatedColour(ColourTagger):
    """The colour model, held inside its first predict() until the test says go."""

    def __init__(self):
        super().__init__()
        self.entered = threading.Event()
        self.go = threading.Event()

    def predict(self, batch):
        self.entered.set()
        assert self.go.wait(60), "the test never let the model go on"
        return super().predict(batch)


def test_a_photo_changed_while_its_retag_is_in_flight_is_tagged_again(library, tmp_path):
    root = tmp_path / "Pictures"
    paths = [write_photo(root / f"p{i}.jpg", i, colour="red") for i in range(4)]
    assert Pipeline(library, ColourTagger(), decode_workers=1).scan([root]).new == 4
    target = paths[0]
    old_sha = _sha(target)
    model = GatedColour()
    outcome: list = []

    def run_retag():
        try:
            outcome.append(service.retag(library, [], tagger=model, batch_size=4))
        except BaseException as exc:  # surfaced below
            outcome.append(exc)

    with watching(library, ColourTagger(), [root], follow_default_model=False):
        retag_thread = threading.Thread(target=run_retag, daemon=True)
        retag_thread.start()
        assert model.entered.wait(60), "the re-tag never reached the model"
        # the re-tag decoded the old content; the file changes now, and the watcher queues it
        write_photo(target, 99, colour="blue")
        new_sha = _sha(target)
        assert new_sha != old_sha

        def queued_again_or_tagged():
            with library.session() as s:
                reason = s.scalar(select(WorkItem.reason).where(WorkItem.path == str(target)))
            return reason not in (None, "retag") or _stored_sha(library, target) == new_sha

        wait_for(queued_again_or_tagged, 30, what="the watcher to queue the changed file")
        model.go.set()  # the re-tag stores what it decoded (the old content)
        retag_thread.join(60)
        assert not retag_thread.is_alive()
        assert not isinstance(outcome[0], BaseException), outcome[0]
        # the newer queue row survived the re-tag's commit: the watcher tags the new content (a row
        # another process released is seen at the watcher's next idle look at the queue, <= 30 s)
        wait_for(lambda: _stored_sha(library, target) == new_sha and queue_length(library) == 0, 60,
                 what="the changed photo tagged from its new content")
    with library.session() as s:
        photo = library.photo_by_path(s, target)
        tags = {t["name"] for t in library.photo_tags(s, photo.id) if t["source"] == "model"}
    assert "blue" in tags and "red" not in tags
    assert outcome[0].retagged == 4


# ---- real processes -----------------------------------------------------------------------------

def _cli(home: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PHOTOTAG_HOME": str(home)}
    return subprocess.Popen([sys.executable, "-m", "phototag", "--home", str(home), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _db(home: Path) -> sqlite3.Connection:
    return sqlite3.connect(home / "phototag.db", timeout=30)


def _count(home: Path, sql: str) -> int:
    conn = _db(home)
    try:
        return conn.execute(sql).fetchone()[0]
    finally:
        conn.close()


def _writable(home: Path) -> bool:
    """Can another process write the database now (no transaction of a stopped process holds it)?"""
    conn = sqlite3.connect(home / "phototag.db", timeout=0.5, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        conn.close()


@pytest.mark.slow
def test_retag_and_watch_processes_at_once_a_changed_photo_is_tagged_once(tmp_path):
    from phototag.config import load_settings, use_settings
    from phototag.library import Library
    from phototag.tagging.builtin import BuiltinTagger

    photos = tmp_path / "photos"
    make_photos(photos)
    home = tmp_path / "home"
    home.mkdir()
    settings = load_settings(home, environ={})
    settings.set_value("batch_size", 1)  # the re-tag takes photo after photo
    settings.set_value("decode_workers", 1)
    lib = Library(settings)
    try:
        assert Pipeline(lib, BuiltinTagger(faces=False), decode_workers=2).scan([photos]).new == 12
    finally:
        lib.close()
        use_settings(None)

    watch = _cli(home, "watch", "--log-format", "json", "--stable-seconds", "0.5", str(photos))
    events: list[dict] = []

    def read_log():
        for line in watch.stderr:
            try:
                events.append(json.loads(line))
            except ValueError:
                events.append({"message": line.decode("utf-8", "replace")})

    reader = threading.Thread(target=read_log, daemon=True)
    reader.start()
    retag = None
    try:
        wait_for(lambda: any(e.get("event") == "reconciled" for e in events) or watch.poll() is not None, 180,
                 what="the watcher's catch-up pass")
        assert watch.poll() is None, events

        retag = _cli(home, "retag", "--model", "builtin", "--format", "json", "--quiet")
        # stop the re-tag (SIGSTOP: alive, holding its claims) once it has stored a photo while some
        # of its photos are not claimed yet, and no write transaction of it is open
        target = None
        deadline = time.monotonic() + 240
        while target is None and time.monotonic() < deadline and retag.poll() is None:
            try:
                with contextlib.closing(_db(home)) as conn:
                    done = conn.execute("select count(*) from photos where tagged_run_id > "
                                        "(select min(id) from model_runs)").fetchone()[0]
                    waiting = conn.execute("select count(*) from work_queue where reason = 'retag' "
                                           "and owner is null").fetchone()[0]
            except sqlite3.OperationalError:
                time.sleep(0.02)
                continue
            if done >= 1 and waiting >= 2:
                retag.send_signal(signal.SIGSTOP)
                time.sleep(0.05)
                with contextlib.closing(_db(home)) as conn:
                    row = conn.execute("select path from work_queue where reason = 'retag' and owner is null "
                                       "order by id desc limit 1").fetchone()
                if row is not None and _writable(home):
                    target = Path(row[0])
                    break
                retag.send_signal(signal.SIGCONT)
            time.sleep(0.01)
        assert target is not None, "the re-tag finished before the test could stop it"

        # the file changes while the re-tag is stopped: the watcher tags its new content
        with Image.open(photos / "coffee.jpg") as img:
            ImageOps.flip(img).save(target, quality=90)
        new_sha = _sha(target)

        def watcher_tagged():
            conn = _db(home)
            try:
                return conn.execute("select sha256 from photos where path = ?", (str(target),)).fetchone()[0] == new_sha
            finally:
                conn.close()

        wait_for(watcher_tagged, 60, what="the watcher to tag the changed photo")
        retag.send_signal(signal.SIGCONT)
        out, err = retag.communicate(timeout=300)
        assert retag.returncode == 0, err.decode()
        report = json.loads(out)
        wait_for(lambda: _count(home, "select count(*) from work_queue") == 0, 60, what="an empty queue")
    finally:
        if retag is not None and retag.poll() is None:
            retag.send_signal(signal.SIGCONT)
            retag.kill()
        watch.send_signal(signal.SIGTERM)
        try:
            watch.wait(60)
        finally:
            if watch.poll() is None:
                watch.kill()
    assert watch.returncode == 0, events[-20:]

    lib = Library(load_settings(home, environ={}))
    try:
        with lib.session() as s:
            runs = dict(s.execute(select(Photo.path, Photo.tagged_run_id)).all())
            stored = s.scalar(select(func.sum(ModelRun.photo_count)))
            sha = s.scalar(select(Photo.sha256).where(Photo.path == str(target)))
    finally:
        lib.close()
        use_settings(None)
    assert sha == new_sha  # the change is tagged
    # the re-tag did every other photo (one model run), the watcher the changed one: each exactly once
    assert report["retagged"] == 11, report
    watcher_run = runs.pop(str(target))
    assert len(runs) == 11 and len(set(runs.values())) == 1 and watcher_run not in set(runs.values())
    assert stored == 12 + 11 + 1
    assert not (home / "retag" / "session.json").exists()
