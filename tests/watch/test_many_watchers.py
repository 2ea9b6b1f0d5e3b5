"""Many watchers, one library on a real PostgreSQL server (issue 14.2): real watcher processes
(tests/watch/run_watcher.py: everything `phototag watch` runs but the model, a tiny real one), real
watchdog, real `kill -9`.

Tagging is shared through the queue's claims; the walk of each root and the background re-tag
scheduling are led by one watcher at a time (phototag/watch/leadership.py), taken over when it dies.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from pg import pg_url  # noqa: F401 (a fixture)
from phototag.config import load_settings
from phototag.db.models import Photo, PhotoTag, WorkItem
from phototag.library import Library
from phototag.watch.errors import WatchError
from phototag.watch.lock import WatchLock, running_watcher
from watch.helpers import model_work, wait_for, write_photo

HERE = Path(__file__).resolve().parent
PY = sys.executable


def start_watcher(home: Path, roots: list[Path], url: str, log: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([PY, str(HERE / "run_watcher.py"), str(home), *map(str, roots), "--database-url", url,
                             "--stable", "0.3", *extra], stdout=subprocess.DEVNULL, stderr=open(log, "ab"))


def events(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]


def stop(proc: subprocess.Popen) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    return proc.wait(60)


@pytest.fixture
def library(pg_url, tmp_path):  # noqa: F811 (the fixture above)
    lib = Library(load_settings(tmp_path / "test-home", environ={"PHOTOTAG_DATABASE_URL": pg_url}))
    yield lib
    lib.close()


def state(lib) -> dict:
    """What the shared library holds now."""
    with lib.session() as s:
        owners = s.scalars(select(WorkItem.owner).where(WorkItem.owner.is_not(None))).all()
        return {
            "photos": s.scalar(select(func.count()).select_from(Photo)),
            "paths": s.scalar(select(func.count(func.distinct(Photo.path)))),
            "tagged": s.scalar(select(func.count()).select_from(Photo).where(Photo.tagged_run_id.is_not(None))),
            "tag_rows": s.scalar(select(func.count()).select_from(PhotoTag)),
            "queued": s.scalar(select(func.count()).select_from(WorkItem)),
            "owners": [o.split(":")[1] for o in owners],  # the claimers' pids
        }


@pytest.mark.parametrize("homes", [("home-a", "home-b"), ("home", "home")], ids=["two-homes", "one-home"])
def test_two_watchers_one_killed_mid_batch_every_photo_tagged_once(pg_url, library, tmp_path, homes):  # noqa: F811
    """Two watchers (each its own home, or both one) on one PostgreSQL library, both watching the same two roots,
    files arriving in both before, during and after: the first one is killed with -9 while a batch
    is in its model and more claims wait in it. The other picks up its claims and the walking of
    both roots; every photo goes through the model exactly once, no row is doubled."""
    r1, r2 = tmp_path / "Pictures", tmp_path / "NAS"
    old = time.time() - 3600
    seed = iter(range(10_000))

    def photos(root: Path, prefix: str, n: int, aged: bool = False) -> list[Path]:
        out = [write_photo(root / f"{prefix}_{i:02d}.jpg", next(seed)) for i in range(n)]
        for p in out if aged else ():  # there before the start: the catch-up queues them at once
            os.utime(p, (old, old))
        return out

    first = photos(r1, "a", 40, aged=True) + photos(r2, "b", 40, aged=True)
    release = tmp_path / "never"  # never created: the first watcher's second batch waits in its model
    log_a, log_b = tmp_path / "a.log", tmp_path / "b.log"
    home_a, home_b = tmp_path / homes[0], tmp_path / homes[1]
    a = start_watcher(home_a, [r1, r2], pg_url, log_a, "--hold-after", "16", "--release", str(release))
    b = None
    try:
        # a leads both roots (its catch-up queued all 80), has tagged one batch and holds the next claims
        wait_for(lambda: state(library)["tagged"] >= 16 and str(a.pid) in state(library)["owners"], 60,
                 what="watcher a tagged a batch and holds claims")
        b = start_watcher(home_b, [r1, r2], pg_url, log_b, "--delay", "0.01")
        during = photos(r1, "c", 6) + photos(r2, "d", 6)  # both watchers see these arrive
        wait_for(lambda: any(e.get("event") == "tagged" for e in events(log_b)), 60, what="b tagging")
        held = state(library)["owners"].count(str(a.pid))
        assert held > 0  # a's claims: in its model and waiting
        if home_a == home_b:  # one home: both run (a shared lock); status sees a watcher, no one pid
            assert b.poll() is None and running_watcher(home_a) == -1
            with pytest.raises(WatchError, match="already running"):  # a watcher of the home's SQLite library
                WatchLock(home_a).acquire()
        a.send_signal(signal.SIGKILL)
        assert a.wait(30) == -signal.SIGKILL
        after = photos(r1, "e", 4) + photos(r2, "f", 4)  # only b is there to see these
        n = len(first) + len(during) + len(after)
        wait_for(lambda: (s := state(library))["tagged"] == n and s["queued"] == 0, 90, interval=0.3,
                 what="every photo tagged by b")
        assert stop(b) == 0, log_b.read_text()[-3000:]
    finally:
        for proc in (a, b):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(30)
    s = state(library)
    assert (s["photos"], s["paths"], s["tagged"], s["queued"], s["owners"]) == (n, n, n, 0, [])
    assert model_work(library) == n, f"{model_work(library) - n} photos went through the model twice"
    assert s["tag_rows"] == 2 * n  # the colour model's two tags per photo, no row doubled
    b_events = events(log_b)
    by_a = sum(e.get("count", 0) for e in events(log_a) if e.get("event") == "tagged")
    by_b = sum(e.get("count", 0) for e in b_events if e.get("event") == "tagged")
    assert by_a + by_b == n and by_a >= 16 and by_b >= held  # b tagged what a held when it died
    # b walked nothing while a led, then took both roots over when a died
    assert any(e.get("event") == "lead_elsewhere" for e in b_events)
    assert {e.get("root") for e in b_events if e.get("event") == "lead_taken"} == {str(r1), str(r2)}
    # taking over does not queue a's rows again: b's claims of them are stored and done, not claimed
    # again as suspects (a's dead claim was their first attempt) and decoded in probe processes
    assert not [e["path"] for e in b_events if e.get("event") == "probe"]


def test_home_lock_is_shared_between_watchers_of_a_server_library_only(tmp_path):
    """Watchers of a server database share the home's lock; a watcher of the home's SQLite library
    still has it alone, both ways; status sees either kind running."""
    home = tmp_path / "home"
    sqlite_watcher = WatchLock(home)
    sqlite_watcher.acquire()
    try:
        assert running_watcher(home) == os.getpid()
        with pytest.raises(WatchError, match="SQLite"):
            WatchLock(home, shared=True).acquire()
    finally:
        sqlite_watcher.release()
    assert running_watcher(home) is None
    first, second = WatchLock(home, shared=True), WatchLock(home, shared=True)
    first.acquire()
    second.acquire()
    try:
        assert running_watcher(home) == -1  # running; several may, so no one pid
        with pytest.raises(WatchError, match="already running"):
            WatchLock(home).acquire()
    finally:
        first.release()
        second.release()
    assert running_watcher(home) is None


def test_a_lead_is_held_by_one_watcher_and_passes_on_when_it_resigns_or_goes(pg_url, library):  # noqa: F811
    from phototag.watch.leadership import RETAG, Leadership

    other_lib = Library(library.settings)
    try:
        mine, theirs = Leadership(library), Leadership(other_lib)
        assert mine.shared and mine.leads("/photos") and mine.leads(RETAG)
        assert mine.held() == {"/photos", RETAG}  # the first lead asked for is the one taken
        assert not theirs.leads("/photos") and not theirs.leads(RETAG) and theirs.leads("/scans")
        mine.resign("/photos")  # its drive went away here
        assert theirs.leads("/photos") and not mine.leads("/photos")
        mine.close()  # stopped (or died: its connection ends either way)
        assert theirs.leads(RETAG) and theirs.held() == {"/photos", "/scans", RETAG}
        theirs.check()  # the connection is alive: the leads stay
        assert theirs.held() == {"/photos", "/scans", RETAG}
        theirs.close()
    finally:
        other_lib.close()
