"""scan --ray / retag --ray on a real local Ray cluster (``ray start --head`` in a subprocess, one per
module: Ray starts slowly), driven through real ``phototag`` processes; an actor killed with -9."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import TEST_PHOTOS, cli_scan, save_sample
from ray_head import RAY, RAY_ENV, RayHead, cmdline

ENV = {**os.environ, **RAY_ENV}

pytestmark = pytest.mark.skipif(not RAY.exists(), reason="Ray is not installed")


@pytest.fixture(scope="module")
def ray_address():
    """A one-node Ray cluster with 2 CPUs, started for this module and stopped by PID."""
    head = RayHead(cpus=2, timeout=90)
    try:
        yield head.address
    finally:
        head.stop()


def phototag(home: Path, *args, env: dict | None = None, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "phototag", "--home", str(home), *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            env={**ENV, **(env or {})}, **popen)


def run_json(home: Path, *args, env: dict | None = None, timeout: float = 240) -> dict:
    proc = phototag(home, *args, "--format", "json", env=env)
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err.decode(errors="replace")[-3000:]
    return json.loads(out)


def library_state(home: Path) -> dict[bytes, dict]:
    """path bytes → the photo's facts and its model tags ({name: score}), from the SQLite file."""
    from phototag.db.models import decode_path

    db = sqlite3.connect(home / "phototag.db")
    db.text_factory = bytes
    photos: dict[bytes, dict] = {}
    for pid, path, sha, w, h, fmt, make, lat, orient, status, error in db.execute(
            "select id, path, sha256, width, height, format, camera_make, gps_lat, orientation, status, error "
            "from photos"):
        tags = {name.decode(): round(score, 4) for name, score in db.execute(
            "select t.name, pt.score from photo_tags pt join tags t on t.id = pt.tag_id "
            "where pt.photo_id = ? and pt.source = 'model'", (pid,))}
        photos[os.fsencode(decode_path(path.decode()))] = {"facts": (sha, w, h, fmt, make, lat, orient, status, error), "tags": tags}
    db.close()
    return photos


def same_tags(a: dict, b: dict) -> None:
    """Same tags per photo; scores within 1e-3 (thread counts differ between the two runs)."""
    assert set(a) == set(b)
    for path in a:
        assert a[path]["facts"] == b[path]["facts"], path
        assert set(a[path]["tags"]) == set(b[path]["tags"]), path
        for tag, score in a[path]["tags"].items():
            assert abs(score - b[path]["tags"][tag]) < 1e-3, (path, tag)


@pytest.fixture(scope="module")
def photos(tmp_path_factory, sample_photos):
    """Real photos (skimage/sklearn samples, EXIF with GPS, a rotated one), one whose name is not
    UTF-8, and one broken file."""
    folder = tmp_path_factory.mktemp("ray-photos")
    for p in sample_photos.iterdir():
        shutil.copy(p, folder / p.name)
    shutil.copy(TEST_PHOTOS / "jpeg" / "exif_gps.jpg", folder / "exif_gps.jpg")
    shutil.copy(TEST_PHOTOS / "orientation" / "hopper_orientation_6.jpg", folder / "rotated.jpg")
    save_sample("chelsea", Path(os.fsdecode(os.fsencode(str(folder)) + b"/caf\xe9 cat.jpg")), size=300)
    (folder / "broken.jpg").write_bytes((sample_photos / "coffee.jpg").read_bytes()[:600])
    return folder


def test_a_scan_through_ray_gives_the_tags_of_a_local_scan(ray_address, photos, tmp_path):
    local, remote = tmp_path / "local", tmp_path / "ray"
    expected = cli_scan(local, photos)
    report = run_json(remote, "scan", "--ray", ray_address, photos)
    assert (report["new"], report["tagged"], report["failed"]) == (expected["new"], expected["tagged"], 1)
    assert report["errors"][0]["path"].endswith("broken.jpg")
    assert report["errors"] == expected["errors"]  # a bad photo is recorded as in a local scan
    a, b = library_state(local), library_state(remote)
    same_tags(a, b)
    assert b[os.fsencode(str(photos)) + b"/caf\xe9 cat.jpg"]["tags"]  # a non-UTF-8 name was read by the worker
    assert sum(bool(p["tags"]) for p in b.values()) >= 7  # the sample photos (a tiny EXIF test file may get none)
    # a re-scan through Ray does no model work
    again = run_json(remote, "scan", "--ray", ray_address, photos)
    assert (again["unchanged"], again["tagged"]) == (len(a), 0)


def test_retag_on_ray_reads_the_photos_where_path_map_says(ray_address, sample_photos, tmp_path):
    """The worker reads ``LOCAL=WORKER``-mapped paths: here the worker's view of cat.jpg is a coffee
    photo, so the re-tag through Ray gives cat.jpg coffee's tags (a local re-tag could not)."""
    mine, theirs = tmp_path / "mine", tmp_path / "theirs"
    mine.mkdir()
    theirs.mkdir()
    shutil.copy(sample_photos / "chelsea.jpg", mine / "cat.jpg")
    shutil.copy(sample_photos / "coffee.jpg", mine / "coffee.jpg")
    shutil.copy(sample_photos / "coffee.jpg", theirs / "cat.jpg")
    shutil.copy(sample_photos / "coffee.jpg", theirs / "coffee.jpg")
    home = tmp_path / "home"
    cli_scan(home, mine)
    before = library_state(home)
    cat, coffee = os.fsencode(str(mine / "cat.jpg")), os.fsencode(str(mine / "coffee.jpg"))
    assert before[cat]["tags"] != before[coffee]["tags"]
    report = run_json(home, "retag", "--ray", ray_address,
                      env={"PHOTOTAG_RAY__PATH_MAP": json.dumps([f"{mine}={theirs}"])})
    assert (report["retagged"], report["failed"]) == (2, [])
    after = library_state(home)
    assert set(after[cat]["tags"]) == set(before[coffee]["tags"])
    assert [c["path"] for c in report["changed"]] == [str(mine / "cat.jpg")]


def _photo_set(folder: Path, sample_photos: Path, n: int) -> None:
    """``n`` distinct real photos (sizes and qualities vary, so no two are byte-identical copies)."""
    names = ["chelsea", "coffee", "astronaut", "rocket", "china", "flower"]
    for i in range(n):
        save_sample(names[i % len(names)], folder / f"p{i:03d}.jpg", size=200 + 7 * i, quality=80 + i % 15)


def _tagging_workers(ray_address: str) -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()
            and cmdline(int(p)).startswith("ray::TaggingWorker")]


def test_an_actor_killed_mid_run_loses_and_doubles_nothing(ray_address, sample_photos, tmp_path):
    folder = tmp_path / "many"
    n = 48
    _photo_set(folder, sample_photos, n)
    home = tmp_path / "home"
    before = set(_tagging_workers(ray_address))
    proc = phototag(home, "scan", "--ray", ray_address, folder, "--batch-size", "2", "--format", "json",
                    env={"PHOTOTAG_RAY__ACTORS": "2"})
    killed = None
    deadline = time.monotonic() + 180
    while killed is None and time.monotonic() < deadline and proc.poll() is None:
        workers = [p for p in _tagging_workers(ray_address) if p not in before]
        done = 0
        if workers and (home / "phototag.db").exists():
            try:
                with sqlite3.connect(f"file:{home / 'phototag.db'}?mode=ro", uri=True, timeout=1) as db:
                    done = db.execute("select count(*) from photos where tagged_run_id is not null").fetchone()[0]
            except sqlite3.Error:
                done = 0
        if done >= 2 and len(workers) == 2:
            os.kill(workers[0], signal.SIGKILL)
            killed = (workers[0], done)
        time.sleep(0.05)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err.decode(errors="replace")[-3000:]
    assert killed is not None, "the scan ended before an actor could be killed"
    assert killed[1] < n, "the actor was killed after the last photo"
    assert b"WARNING phototag.cluster: a Ray tagging worker" in err  # its batches were sent again
    report = json.loads(out)
    assert (report["new"], report["tagged"], report["failed"]) == (n, n, 0)
    db = sqlite3.connect(home / "phototag.db")
    assert db.execute("select count(*), count(distinct path) from photos where status = 'ok' "
                      "and tagged_run_id is not null").fetchone() == (n, n)
    assert db.execute("select count(*) from (select photo_id, tag_id, source from photo_tags "
                      "group by 1, 2, 3 having count(*) > 1)").fetchone() == (0,)
    assert db.execute("select count(*) from work_queue").fetchone() == (0,)
    assert db.execute("select count(*) from model_runs").fetchone() == (1,)
