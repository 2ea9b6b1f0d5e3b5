"""The persistent work queue (phototag.ingest.queue): order, upserts, attempts, and the in-flight re-enqueue rule."""

from __future__ import annotations

import datetime as _dt
import os
import signal
import subprocess
import sys
import threading

import pytest
from pg import pg_url  # noqa: F401 (a fixture)
from sqlalchemy import select

from phototag.db.models import WorkItem, utcnow
from phototag.ingest.queue import (
    ISOLATE_AFTER,
    LEASE_SECONDS,
    MAX_FAILURES,
    PRIORITY_CATCH_UP,
    PRIORITY_NEW,
    PRIORITY_RETAG,
    WorkQueue,
    model_key,
    owner_alive,
    process_owner,
)
from phototag.pipeline import Job, Pipeline
from watch.helpers import ColourTagger, model_work, photo_row, queue_length, write_photo


def claim_in_a_process_that_dies(home, limit: int) -> list[str]:
    """A real separate process claims ``limit`` rows and dies (os._exit: no cleanup, like kill -9)."""
    code = (
        "import os, sys\n"
        "from phototag.config import load_settings\n"
        "from phototag.library import Library\n"
        "from phototag.ingest.queue import WorkQueue\n"
        "items = WorkQueue(Library(load_settings(sys.argv[1], environ={}))).claim(int(sys.argv[2]))\n"
        "print('\\n'.join(str(i.path) for i in items), flush=True)\n"
        "os._exit(0)\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(home.home), str(limit)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_claim_order_is_priority_then_fifo_and_enqueue_keeps_the_higher_priority(library, tmp_path):
    q = WorkQueue(library)
    q.enqueue([tmp_path / "a.jpg", tmp_path / "b.jpg"], priority=PRIORITY_CATCH_UP)
    q.enqueue([tmp_path / "c.jpg"], priority=PRIORITY_RETAG, reason="retag")
    q.enqueue([tmp_path / "d.jpg"], priority=PRIORITY_NEW)
    q.enqueue([tmp_path / "b.jpg"], priority=PRIORITY_NEW)  # upsert: b is now urgent, keeps its place among them
    q.enqueue([tmp_path / "a.jpg"], priority=PRIORITY_RETAG)  # a lower priority never demotes
    assert q.length() == 4
    claimed = q.claim(10)
    assert [c.path.name for c in claimed] == ["b.jpg", "d.jpg", "a.jpg", "c.jpg"]
    assert all(c.attempts == 0 for c in claimed)
    with library.session() as s:
        assert set(s.scalars(select(WorkItem.attempts)).all()) == {1}


def test_a_path_in_flight_is_not_claimed_twice(library, tmp_path):
    q = WorkQueue(library)
    q.enqueue([tmp_path / "a.jpg", tmp_path / "b.jpg"])
    (first,) = q.claim(1)
    assert [c.path.name for c in q.claim(5, skip={str(first.path)})] == ["b.jpg"]
    q.enqueue([first.path])  # changed while in flight: queued again, with a later stamp
    assert q.claim(5, skip={str(first.path), str(tmp_path / "b.jpg")}) == []  # not while the first job runs
    assert q.still_queued({str(first.path): first.enqueued_at}) == set()
    assert q.queued_paths([str(first.path)]) == {str(first.path)}
    assert q.claim(5) == []  # b and the first claim are owned by this process until they are settled
    q.done(first)  # the first job is stored: its claim settles; the newer enqueue keeps the row, released
    (again,) = q.claim(5)  # once it is done
    assert again.path == first.path and again.enqueued_at > first.enqueued_at


def test_rows_whose_claimers_died_twice_are_claimed_alone(library, home, tmp_path):
    q = WorkQueue(library)
    q.enqueue([tmp_path / f"{i}.jpg" for i in range(5)])
    for _ in range(ISOLATE_AFTER):
        assert len(claim_in_a_process_that_dies(home, 5)) == 5  # claimed, never finished: the process died
    alone = q.claim(5)
    assert len(alone) == 1 and alone[0].isolated and alone[0].attempts == ISOLATE_AFTER
    second = q.claim(5)  # each of them is a suspect too (its claims died twice): alone as well
    assert len(second) == 1 and second[0].path != alone[0].path


def test_claims_of_a_live_process_are_respected_and_a_dead_ones_are_free(library, home, tmp_path):
    q = WorkQueue(library)
    q.enqueue([tmp_path / f"{i}.jpg" for i in range(4)])
    code = ("import sys, time\nfrom phototag.config import load_settings\nfrom phototag.library import Library\n"
            "from phototag.ingest.queue import WorkQueue\n"
            "items = WorkQueue(Library(load_settings(sys.argv[1], environ={}))).claim(2)\n"
            "print(len(items), flush=True)\ntime.sleep(60)\n")
    other = subprocess.Popen([sys.executable, "-c", code, str(home.home)], stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline().strip() == "2"
        with library.session() as s:
            owners = set(s.scalars(select(WorkItem.owner).where(WorkItem.owner.is_not(None))))
        assert len(owners) == 1 and owner_alive(owners.pop(), None)
        mine = q.claim(10)
        assert [i.path.name for i in mine] == ["2.jpg", "3.jpg"]  # not the two the other process holds
        assert q.claim_path(tmp_path / "0.jpg") is None  # a scan leaves it to the live owner
    finally:
        other.kill()  # kill -9
        other.wait()
    again = q.claim(10)  # its claims are free at once: its pid is gone
    assert sorted(i.path.name for i in again) == ["0.jpg", "1.jpg"] and all(i.attempts == 1 for i in again)
    assert owner_alive(process_owner(), None)


def test_concurrent_enqueue_and_delete_of_one_row_never_fails(library, tmp_path):
    """The watcher's catch-up pass enqueues while its consumer settles or sets aside the same rows
    (StaleDataError in issue 10 item 4): every enqueue is one upsert, never a stale ORM update."""
    q = WorkQueue(library)
    paths = [tmp_path / f"{i}.jpg" for i in range(50)]
    errors: list[BaseException] = []

    def enqueue_many():
        try:
            for _ in range(30):
                q.enqueue(paths, priority=PRIORITY_CATCH_UP)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=enqueue_many) for _ in range(2)]
    for t in threads:
        t.start()
    for _ in range(30):
        q.forget(paths)
    for t in threads:
        t.join(120)
    assert errors == []
    q.enqueue(paths)
    assert q.length() == 50


def test_a_photo_failing_alone_is_set_aside_until_the_model_or_phototag_changes(library, tmp_path):
    photo = write_photo(tmp_path / "p.jpg", 1)
    q = WorkQueue(library)
    q.enqueue([photo])
    v1 = model_key("0.1.0", "test/mean-colour", "0" * 64)
    for n in range(1, MAX_FAILURES + 1):
        (item,) = q.claim(5, model=v1)
        assert item.failures == n - 1
        assert q.fail_alone(item, "decoder crashed (SIGSEGV)", tmp_path, v1) is (n == MAX_FAILURES)
    assert q.claim(5, model=v1) == []  # set aside for this phototag and model
    row = photo_row(library, photo)
    assert row.status == "error" and "set aside after 3 failures" in row.error and "SIGSEGV" in row.error
    assert q.length() == 1 and q.set_aside() == 1
    for changed in (model_key("0.2.0", "test/mean-colour", "0" * 64), model_key("0.1.0", "test/mean-colour", "1" * 64)):
        (again,) = q.claim(5, model=changed)  # a new phototag or new weights: tried again
        assert again.set_aside_for == v1
        q.release([again])
    q.enqueue([photo])  # the file changed: a new chance with the same model too
    (fresh,) = q.claim(5, model=v1)
    assert fresh.failures == 0 and fresh.set_aside_for is None


def test_batch_does_not_drop_a_row_enqueued_again_while_in_flight(library, tmp_path):
    photo = write_photo(tmp_path / "p.jpg", 1)
    q = WorkQueue(library)
    q.enqueue([photo])
    (item,) = q.claim(1)
    q.enqueue([photo])  # the file changed again while its batch was in flight
    Pipeline(library, ColourTagger(), decode_workers=1).process(
        [Job(photo, tmp_path, queued_at=item.enqueued_at)])
    assert photo_row(library, photo).tagged_run_id is not None
    assert queue_length(library) == 1  # still queued: the newer version will be looked at
    # a claim that is current is removed with its batch; the finished one is not held against the
    # photo (it would look like a crash and, twice, send the newer version to a probe)
    (item,) = q.claim(1)
    assert item.attempts == 0
    Pipeline(library, ColourTagger(), decode_workers=1).process(
        [Job(photo, tmp_path, queued_at=item.enqueued_at)])
    assert queue_length(library) == 0
    assert model_work(library) == 2


def test_scan_still_clears_queue_rows_by_path(library, tmp_path):
    root = tmp_path / "r"
    write_photo(root / "p.jpg", 1)
    WorkQueue(library).enqueue([root / "p.jpg"])
    Pipeline(library, ColourTagger(), decode_workers=1).scan([root])
    assert queue_length(library) == 0


def test_file_vanishing_after_its_claim_is_recorded_and_its_row_settled(library, tmp_path):
    photo = write_photo(tmp_path / "p.jpg", 1)
    q = WorkQueue(library)
    q.enqueue([photo])
    (item,) = q.claim(1)
    st = photo.stat()
    photo.unlink()  # gone between classification (size, mtime, hash known) and decoding
    report = Pipeline(library, ColourTagger(), decode_workers=1).process(
        [Job(photo, tmp_path, size=st.st_size, mtime=st.st_mtime, sha256="0" * 64, queued_at=item.enqueued_at)])
    assert report.failed == 1 and "vanished" in report.errors[0][1]
    row = photo_row(library, photo)
    assert row.status == "error" and "vanished" in row.error
    assert queue_length(library) == 0


# ---- a PostgreSQL queue shared by processes (and machines) -------------------------------------

_CLAIMER = (
    "import os, sys, time\n"
    "from pathlib import Path\n"
    "from phototag.config import load_settings\n"
    "from phototag.library import Library\n"
    "from phototag.ingest.queue import WorkQueue\n"
    "q = WorkQueue(Library(load_settings(sys.argv[1])))\n"
    "print('ready', flush=True)\n"
    "go = Path(sys.argv[3])\n"
    "while not go.exists():\n"
    "    time.sleep(0.01)\n"
    "mode = sys.argv[4]\n"
    "while True:\n"
    "    items = q.claim(int(sys.argv[2]))\n"
    "    if not items:\n"
    "        break\n"
    "    for i in items:\n"
    "        print(i.path, flush=True)\n"
    "        if mode == 'drain':\n"
    "            q.done(i)\n"
    "    if mode == 'hold':\n"
    "        print('held', flush=True)\n"
    "        time.sleep(120)\n"
    "os._exit(0)\n"
)


def _claimer(home, url, limit, go, mode):
    env = {**os.environ, "PHOTOTAG_DATABASE_URL": url}
    proc = subprocess.Popen([sys.executable, "-c", _CLAIMER, str(home), str(limit), str(go), mode],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
    return proc


@pytest.fixture
def pg_library(tmp_path, pg_url):  # noqa: F811
    from phototag.config import load_settings
    from phototag.library import Library

    lib = Library(load_settings(tmp_path / "home", environ={"PHOTOTAG_DATABASE_URL": pg_url}))
    assert lib.db.dialect == "postgresql"
    yield lib
    lib.close()


def test_postgresql_two_processes_claim_disjoint_rows_each_exactly_once(pg_library, pg_url, tmp_path):  # noqa: F811
    paths = [f"/photos/{i:04d}.jpg" for i in range(240)]
    WorkQueue(pg_library).enqueue(paths)
    go = tmp_path / "go"
    procs = [_claimer(tmp_path / "home", pg_url, 4, go, "drain") for _ in range(2)]
    go.touch()
    claimed = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        claimed.append(out.split())
    assert all(claimed), "both processes claimed rows"
    both = claimed[0] + claimed[1]
    assert sorted(both) == paths  # every row claimed once: none twice, none lost
    assert WorkQueue(pg_library).length() == 0


def test_postgresql_claims_of_a_killed_process_are_released(pg_library, pg_url, tmp_path):  # noqa: F811
    q = WorkQueue(pg_library)
    q.enqueue([f"/photos/{i}.jpg" for i in range(8)])
    go = tmp_path / "go"
    go.touch()
    proc = _claimer(tmp_path / "home", pg_url, 5, go, "hold")
    try:
        lines = []
        while (line := proc.stdout.readline().strip()) != "held":
            assert line, proc.stderr.read()
            lines.append(line)
        assert len(lines) == 5
        # the holder is alive: its rows are not ours
        mine = {str(i.path) for i in q.claim(10)}
        assert mine == {f"/photos/{i}.jpg" for i in range(8)} - set(lines)
        q.release(mine)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    again = {str(i.path): i.attempts for i in q.claim(10)}
    assert set(again) == {f"/photos/{i}.jpg" for i in range(8)}  # the dead process's claims are free
    assert all(again[p] == 1 for p in lines)  # its unfinished claim counted as an attempt


def test_postgresql_a_claim_of_another_host_holds_until_its_heartbeat_is_stale(pg_library):
    q = WorkQueue(pg_library)
    q.enqueue(["/photos/a.jpg", "/photos/b.jpg"])
    with pg_library.session() as s:  # watchers on two other machines have claimed them, and beat
        for path, host in (("/photos/a.jpg", "nas.example"), ("/photos/b.jpg", "gpu.example")):
            s.execute(WorkItem.__table__.update().where(WorkItem.path == path)
                      .values(owner=f"{host}:4242:123456", heartbeat_at=utcnow()))
    assert q.claim(10) == []  # (another host's pid says nothing here: only its heartbeat counts)
    stale = utcnow() - _dt.timedelta(seconds=LEASE_SECONDS + 1)
    with pg_library.session() as s:  # the NAS stopped beating a lease ago
        s.execute(WorkItem.__table__.update().where(WorkItem.path == "/photos/a.jpg").values(heartbeat_at=stale))
    assert [str(i.path) for i in q.claim(10)] == ["/photos/a.jpg"]


def test_postgresql_enqueue_upsert_keeps_the_higher_priority_and_release_uncharges(pg_library):
    q = WorkQueue(pg_library)
    q.enqueue(["/p/a.jpg", "/p/b.jpg"], priority=PRIORITY_CATCH_UP)
    q.enqueue(["/p/b.jpg"], priority=PRIORITY_NEW)
    q.enqueue(["/p/a.jpg"], priority=PRIORITY_RETAG)
    claimed = q.claim(10)
    assert [c.path.name for c in claimed] == ["b.jpg", "a.jpg"]
    q.release(claimed)
    with pg_library.session() as s:
        assert set(s.scalars(select(WorkItem.attempts)).all()) == {0}
        assert dict(s.execute(select(WorkItem.path, WorkItem.priority)).all()) == {
            "/p/a.jpg": PRIORITY_CATCH_UP, "/p/b.jpg": PRIORITY_NEW}


def test_postgresql_a_claim_passes_by_rows_another_claimer_has_in_hand(pg_library):
    """FOR UPDATE SKIP LOCKED: a row another transaction holds (a claimer between its read and its
    commit, on any machine) is skipped, not waited for."""
    q = WorkQueue(pg_library)
    q.enqueue(["/photos/a.jpg", "/photos/b.jpg"])
    result: list = []
    with pg_library.engine.connect() as other:
        other.execute(select(WorkItem.id).where(WorkItem.path == "/photos/a.jpg").with_for_update())
        claimer = threading.Thread(target=lambda: result.append(q.claim(10)), daemon=True)
        claimer.start()
        claimer.join(15)
        waited = claimer.is_alive()
        other.rollback()
    claimer.join(30)
    assert not waited, "the claim waited for the locked row"
    assert [str(i.path) for i in result[0]] == ["/photos/b.jpg"]
