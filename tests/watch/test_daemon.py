"""The daemon as a separate process: kill -9 at any moment loses and duplicates nothing; one watcher
per home; status; SIGTERM; JSON logs; the systemd unit."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from phototag.config import load_settings
from phototag.db.models import Photo, WorkItem
from phototag.library import Library
from watch.helpers import model_work, photo_bytes, wait_for, write_photo

HERE = Path(__file__).resolve().parent
PY = sys.executable


def start_colour_daemon(home: Path, root: Path, delay: float, log: Path, stable: float = 0.5,
                        extra: tuple[str, ...] = ()) -> subprocess.Popen:
    return subprocess.Popen([PY, str(HERE / "run_watcher.py"), str(home), str(root), "--delay", str(delay),
                             "--stable", str(stable), *extra],
                            stdout=subprocess.DEVNULL, stderr=open(log, "ab"))


def log_events(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]


def counts(home: Path) -> tuple[int, int, int, int]:
    """(tagged photos, model work, queue rows, rows claimed and in flight)"""
    lib = Library(load_settings(home, environ={}))
    try:
        with lib.session() as s:
            tagged = s.scalar(select(func.count()).select_from(Photo).where(Photo.tagged_run_id.is_not(None)))
            queued = s.scalar(select(func.count()).select_from(WorkItem))
            claimed = s.scalar(select(func.count()).select_from(WorkItem).where(WorkItem.attempts > 0))
        return tagged, model_work(lib), queued, claimed
    finally:
        lib.close()


def test_kill_9_at_many_points_loses_and_duplicates_nothing(tmp_path):
    home, root, log = tmp_path / "home", tmp_path / "Pictures", tmp_path / "daemon.log"
    root.mkdir()
    n = 240
    for i in range(n // 2):  # half there before the first start (catch-up), half arriving later
        write_photo(root / f"a{i // 40}" / f"p{i:03d}.jpg", i)
    proc = start_colour_daemon(home, root, 0.02, log)
    kills = 0
    try:
        arrived = n // 2
        last = 0
        while kills < 6:
            if arrived < n:  # more photos keep arriving between kills
                for i in range(arrived, min(n, arrived + 20)):
                    write_photo(root / f"b{i // 40}" / f"p{i:03d}.jpg", i)
                arrived = min(n, arrived + 20)
            # wait until a batch is in flight (rows claimed) after some progress, then kill -9
            try:
                wait_for(lambda: (c := counts(home))[3] > 0 and c[0] > last, 60, interval=0.05,
                         what="a batch in flight")
            except AssertionError:
                if counts(home)[0] == n:
                    break
                raise
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            kills += 1
            last = counts(home)[0]
            proc = start_colour_daemon(home, root, 0.02, log)
        for i in range(arrived, n):
            write_photo(root / f"b{i // 40}" / f"p{i:03d}.jpg", i)
        wait_for(lambda: counts(home)[0] == n and counts(home)[2] == 0, 120, interval=0.3, what="all tagged")
        time.sleep(1.0)
        tagged, work, queued, _ = counts(home)
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(60)
    assert kills >= 3, f"only {kills} kills landed mid-batch"
    assert rc == 0, log.read_text()[-3000:]
    assert (tagged, queued) == (n, 0)
    assert work == n, f"{work - n} photos were tagged twice"  # every store_prediction counted once


@pytest.mark.slow
def test_cli_daemon_with_builtin_model_survives_kill_9(tmp_path):
    """`python -m phototag --home H watch ROOT` with the built-in model, killed mid-batch, restarted."""
    home, root = tmp_path / "home", tmp_path / "Pictures"
    n = 40
    for i in range(n):
        write_photo(root / f"p{i:02d}.jpg", i, size=96)
    cmd = [PY, "-m", "phototag", "--home", str(home), "watch", "--log-format", "json", str(root)]
    log = tmp_path / "cli.log"
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(log, "ab"))
    try:
        wait_for(lambda: counts(home)[0] > 0 and counts(home)[3] > 0, 240, interval=0.05, what="a batch in flight")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(log, "ab"))
        wait_for(lambda: counts(home)[0] == n and counts(home)[2] == 0, 400, interval=0.5, what="all tagged")
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(120)
    tagged, work, queued, _ = counts(home)
    assert rc == 0
    assert (tagged, work, queued) == (n, n, 0)


def run_cli(home: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "phototag", "--home", str(home), *args], capture_output=True, text=True,
                          timeout=timeout)


def test_one_watcher_per_home_status_sigterm_and_json_logs(tmp_path):
    home, root = tmp_path / "home", tmp_path / "Pictures"
    root.mkdir()
    idle = run_cli(home, "status", "--format", "json")
    assert idle.returncode == 0, idle.stderr
    data = json.loads(idle.stdout)
    assert data["daemon"]["running"] is False and data["queue"]["length"] == 0

    log = tmp_path / "watch.log"
    proc = subprocess.Popen([PY, "-m", "phototag", "--home", str(home), "watch", "--log-format", "json", str(root)],
                            stdout=subprocess.DEVNULL, stderr=open(log, "wb"))
    try:
        wait_for(lambda: (home / "watch.json").exists() and "reconciled" in log.read_text(), 60, what="daemon up")
        second = run_cli(home, "watch", str(root), timeout=60)
        assert second.returncode == 2
        assert "already running" in second.stderr and str(proc.pid) in second.stderr
        assert "Traceback" not in second.stderr

        status = json.loads(run_cli(home, "status", "--format", "json").stdout)
        assert status["daemon"]["running"] is True and status["daemon"]["pid"] == proc.pid
        assert status["daemon"]["model"] == "builtin"
        assert [r["path"] for r in status["daemon"]["roots"]] == [str(root.resolve())]
        text = run_cli(home, "status")
        assert "running" in text.stdout and str(root.resolve()) in text.stdout

        (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")  # no model needed
        wait_for(lambda: "broken.jpg" in log.read_text(), 30, what="error logged")
        assert json.loads(run_cli(home, "status", "--format", "json").stdout)["photos"]["errors"] == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(60)
    assert rc == 0
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    events = {line.get("event") for line in lines}
    assert {"started", "watching", "reconciled", "error", "stopping", "stopped"} <= events, events
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    err = next(line for line in lines if line.get("event") == "error")
    assert err["path"] == str(root.resolve() / "broken.jpg")
    after = json.loads(run_cli(home, "status", "--format", "json").stdout)
    assert after["daemon"]["running"] is False  # the lock went with the process


def test_service_install_writes_a_systemd_user_unit(tmp_path):
    home, root = tmp_path / "home", tmp_path / "Pictures"
    root.mkdir()
    env = {**os.environ, "HOME": str(tmp_path / "user"), "XDG_CONFIG_HOME": str(tmp_path / "user" / ".config"),
           "USER": "alice"}
    done = subprocess.run([PY, "-m", "phototag", "--home", str(home), "service", "install", str(root), "--polling"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    unit = tmp_path / "user" / ".config" / "systemd" / "user" / "phototag.service"
    text = unit.read_text()
    exec_start = next(line for line in text.splitlines() if line.startswith("ExecStart="))
    argv = exec_start.removeprefix("ExecStart=").split()
    assert os.path.isabs(argv[0]) and os.access(argv[0], os.X_OK)
    assert argv[1:] [:4] == ["--home", str(home.resolve()), "watch", "--polling"]
    assert argv[-1] == str(root.resolve())
    assert "[Install]" in text and "WantedBy=default.target" in text and "Restart=on-failure" in text
    assert "systemctl --user enable --now phototag" in done.stdout
    assert "loginctl enable-linger alice" in done.stdout
    # the unit's command really starts phototag
    check = subprocess.run([argv[0], "--version"], capture_output=True, text=True, timeout=120)
    assert check.returncode == 0 and "phototag" in check.stdout
    again = subprocess.run([PY, "-m", "phototag", "--home", str(home), "service", "install", str(tmp_path)],
                           capture_output=True, text=True, env=env, timeout=120)
    assert again.returncode == 2 and "--force" in again.stderr


def test_sigterm_mid_batch_finishes_the_batch_and_leaves_nothing_claimed(tmp_path):
    """SIGTERM while a batch is tagged: the batch is committed once, nothing stays charged a claim, and
    every file the watcher knew of is tagged, still queued, or — if it was still waiting to be stable —
    said so in the log and tagged by the next start's catch-up pass. Nothing is lost, nothing doubled."""
    home, root, log = tmp_path / "home", tmp_path / "Pictures", tmp_path / "daemon.log"
    n = 40
    old = time.time() - 3600
    for i in range(n - 1):  # long stable: the catch-up pass enqueues them at once
        os.utime(write_photo(root / f"p{i:02d}.jpg", i), (old, old))
    write_photo(root / f"p{n - 1:02d}.jpg", n - 1)  # just written: still settling when SIGTERM comes
    proc = start_colour_daemon(home, root, 0.15, log, stable=120)  # ~2.4 s per batch of 16
    try:
        wait_for(lambda: counts(home)[3] > 0, 60, interval=0.05, what="a batch in flight")
        time.sleep(0.3)
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(60)
    assert rc == 0, log.read_text()[-2000:]
    tagged, work, queued, claimed = counts(home)
    assert tagged > 0 and work == tagged  # the batch in progress was committed, once
    assert claimed == 0  # nothing left half-claimed: a restart owes no photo an attempt
    events = log_events(log)
    assert "tagged" in {e.get("event") for e in events}
    unsettled = sum(e["count"] for e in events if e.get("event") == "unsettled")
    assert unsettled == 1  # the fresh file: known to the watcher, not stable yet, not enqueued
    assert tagged + queued == n - unsettled  # every enqueued file is tagged or still queued

    proc = start_colour_daemon(home, root, 0.0, log)  # its catch-up pass finds the unsettled file
    try:
        wait_for(lambda: (c := counts(home))[0] == n and c[2] == 0, 60, interval=0.2, what="all tagged")
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(60)
    assert rc == 0, log.read_text()[-2000:]
    tagged, work, queued, claimed = counts(home)
    assert (tagged, work, queued, claimed) == (n, n, 0, 0)  # each photo tagged exactly once


def test_service_unit_quotes_paths_the_way_systemd_reads_them():
    # systemd expands $VARS and %specifiers and reads backslash escapes inside quotes: a root named
    # like this must reach phototag unchanged
    from phototag.watch.service import service_unit

    root = Path("/p/My Pics $HOME 50% \"x\" a\\b 'q'")
    text = service_unit(Path("/h/ph"), [root], command=["/usr/bin/phototag"])
    exec_start = next(line for line in text.splitlines() if line.startswith("ExecStart="))
    assert exec_start == ("ExecStart=/usr/bin/phototag --home /h/ph watch --log-format json "
                          "\"/p/My Pics $$HOME 50%% \\\"x\\\" a\\\\b 'q'\"")


def test_service_install_for_a_root_whose_name_is_not_utf8(tmp_path):
    """A folder named in Latin-1 (a NAS share) and one with a newline: the unit file is valid UTF-8,
    and systemd itself reads the escaped words back as the exact bytes of the paths."""
    import shutil

    from phototag.watch.service import service_unit

    base = os.fsencode(tmp_path)
    latin1 = base + b"/photos_\xe9t\xe9 $HOME 50%"
    newline = base + b"/new\nline"
    for d in (latin1, newline):
        os.mkdir(d)
    env = {**os.environ, "HOME": str(tmp_path / "user"), "XDG_CONFIG_HOME": str(tmp_path / "user" / ".config")}
    done = subprocess.run([os.fsencode(PY), b"-m", b"phototag", b"--home", os.fsencode(tmp_path / "home"),
                           b"service", b"install", latin1, newline], capture_output=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    unit = (tmp_path / "user" / ".config" / "systemd" / "user" / "phototag.service").read_bytes()
    text = unit.decode("utf-8")  # a unit file must be UTF-8
    exec_start = next(line for line in text.splitlines() if line.startswith("ExecStart="))
    assert exec_start.endswith(' "' + str(tmp_path) + '/photos_\\xe9t\\xe9 $$HOME 50%%" "'
                               + str(tmp_path) + '/new\\x0aline"')
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed: cannot have systemd read the unit back")
    # systemd checks that a unit's command exists: put one under the Latin-1 folder and name it in a
    # unit quoted the same way; `verify` fails ("is not executable") unless systemd decoded the exact
    # bytes. (A command's name may not hold a newline, so that folder is checked by the text above.)
    exe = latin1 + b"/run"
    with open(exe, "wb") as f:
        f.write(b"#!/bin/sh\n")
    os.chmod(exe, 0o755)
    units = tmp_path / "units"
    units.mkdir()
    (units / "t.service").write_text(service_unit(tmp_path / "home", [Path(os.fsdecode(latin1))],
                                                  command=[os.fsdecode(exe)]), encoding="utf-8")
    check = subprocess.run(["systemd-analyze", "verify", "--man=no", "t.service"], cwd=units,
                           capture_output=True, text=True, errors="replace", timeout=60)
    assert check.returncode == 0 and "not executable" not in check.stderr, check.stderr


def photo_with_corrupt_exif(dest: Path) -> Path:
    """A real photo (scikit-image's cat) whose EXIF block is cut short: Pillow warns ("Corrupt EXIF
    data") through Python's warnings, exiv2 complains through its own log handler."""
    from conftest import save_sample

    save_sample("chelsea", dest, size=256)
    from PIL import Image

    exif = (b"Exif\x00\x00MM\x00\x2a\x00\x00\x00\x08\x00\x03"
            b"\x01\x12\x00\x03\x00\x00\x00\x01\x00\x06\x00\x00\x87\x69\x00\x04\x00\x00\x00\x01\x00\x00\x00\x40")
    with Image.open(dest) as img:
        img.load()
        img.save(dest, exif=exif, quality=90)
    return dest


def test_json_logs_are_json_on_every_line_even_when_libraries_warn(tmp_path):
    """`watch --log-format json` meets photos that make Pillow and exiv2 complain: every line it
    writes on stdout and stderr still parses as a JSON log record."""
    import shutil

    from conftest import TEST_PHOTOS

    home, root = tmp_path / "home", tmp_path / "Pictures"
    root.mkdir()
    shutil.copy(TEST_PHOTOS / "jpeg" / "broken_exif_dpi.jpg", root)
    for maker in sorted((TEST_PHOTOS / "makers").glob("r_*.jpg")):
        shutil.copy(maker, root)
    photo_with_corrupt_exif(root / "cat_corrupt_exif.jpg")
    n = len(list(root.iterdir()))
    out, err = tmp_path / "stdout.log", tmp_path / "stderr.log"
    proc = subprocess.Popen([PY, "-m", "phototag", "--home", str(home), "watch", "--log-format", "json", str(root)],
                            stdout=open(out, "wb"), stderr=open(err, "wb"))
    try:
        wait_for(lambda: (home / "phototag.db").exists() and counts(home)[0] == n, 300, interval=0.5,
                 what="all tagged")
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(60)
    assert rc == 0, err.read_text()[-3000:]
    lines = [line for f in (out, err) for line in f.read_text().splitlines() if line.strip()]
    not_json = []
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            not_json.append(line)
    assert not_json == []
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    # the run really met complaints from the libraries (else this test proves nothing)
    complaints = [r for r in records if r["logger"] in ("py.warnings", "exiv2", "stderr")]
    assert any("Corrupt EXIF" in r["message"] for r in complaints), [r["message"] for r in records]
    assert {r.get("event") for r in records} >= {"started", "tagged", "stopped"}


def test_watch_exits_non_zero_when_its_database_is_removed(tmp_path):
    """A fatal error of the event thread (here: the library database deleted under the daemon, so
    every later commit would be lost) must end `phototag watch` with a non-zero status, so that
    systemd's Restart=on-failure starts it again; before, it ended with 0 (or went on writing to
    a deleted file)."""
    home, root = tmp_path / "home", tmp_path / "Pictures"
    root.mkdir()
    err = tmp_path / "stderr.log"
    proc = subprocess.Popen([PY, "-m", "phototag", "--home", str(home), "watch", "--log-format", "json", str(root)],
                            stdout=subprocess.DEVNULL, stderr=open(err, "wb"))
    try:
        wait_for(lambda: "reconciled" in err.read_text(), 120, what="daemon up")
        for f in home.glob("phototag.db*"):
            f.unlink()
        rc = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert rc == 1, err.read_text()[-3000:]
    records = [json.loads(line) for line in err.read_text().splitlines() if line.strip()]
    fatal = [r for r in records if r.get("event") in ("fatal", "stopped") and r["level"] == "error"]
    # (a connection opened after the delete may already have created an empty file in its place)
    assert fatal and re.search(r"phototag\.db was (removed|replaced) while watching", fatal[-1]["error"])


def owned_by(home: Path, pid: int) -> list[str]:
    lib = Library(load_settings(home, environ={}))
    try:
        with lib.session() as s:
            owners = s.scalars(select(WorkItem.owner).where(WorkItem.owner.is_not(None))).all()
        return [o for o in owners if o.split(":")[-2] == str(pid)]
    finally:
        lib.close()


def test_kill_9_right_after_each_claim_never_sets_a_healthy_photo_aside(tmp_path):
    """Issue 10 item 3: a kill -9 landing right after a claim, again and again, is no evidence
    against the photos in flight. Killed 8 times at claim time (more than the old 5-attempt limit),
    the photos are tagged in the end, once each, and none is given up or set aside."""
    home, root, log = tmp_path / "home", tmp_path / "Pictures", tmp_path / "daemon.log"
    n = 3
    old = time.time() - 3600
    for i in range(n):
        os.utime(write_photo(root / f"p{i}.jpg", i), (old, old))
    kills = 0
    proc = start_colour_daemon(home, root, 1.0, log)  # a slow model: the kill lands before any commit
    try:
        while kills < 8:
            wait_for(lambda: (home / "phototag.db").exists() and owned_by(home, proc.pid), 120, interval=0.02,
                     what="a claim")
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            kills += 1
            proc = start_colour_daemon(home, root, 1.0 if kills < 8 else 0.0, log)
        wait_for(lambda: (c := counts(home))[0] == n and c[2] == 0, 180, interval=0.3, what="all tagged")
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(60)
    assert rc == 0, log.read_text()[-3000:]
    tagged, work, queued, _ = counts(home)
    assert (tagged, work, queued) == (n, n, 0)
    lib = Library(load_settings(home, environ={}))
    try:
        with lib.session() as s:
            assert s.scalars(select(Photo.status)).all() == ["ok"] * n
    finally:
        lib.close()
    events = {e.get("event") for e in log_events(log)}
    assert "probe" in events  # the suspects were decoded alone in a probe process, and passed
    assert not events & {"set_aside", "gave_up", "failed_alone"}


def test_json_logging_wraps_what_c_code_and_prints_write_to_stdout_and_stderr(tmp_path):
    """Output that bypasses logging — a C library writing to fd 2, a stray print, a traceback at
    exit — still comes out as JSON records when the daemon logs JSON."""
    code = (
        "import logging, os, warnings\n"
        "from phototag.watch.logs import configure_logging\n"
        "configure_logging('json', logging.INFO, capture_output=True)\n"
        "print('a stray print')\n"
        "os.write(2, b'libfoo: warning written by C code\\n')\n"
        "warnings.warn('a Python warning')\n"
        "logging.getLogger('phototag.test').info('hello', extra={'event': 'hello'})\n"
        "raise RuntimeError('boom')\n"
    )
    done = subprocess.run([PY, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stdout == ""
    records = [json.loads(line) for line in done.stderr.splitlines() if line.strip()]
    messages = " | ".join(r["message"] for r in records)
    for text in ("a stray print", "libfoo: warning written by C code", "a Python warning", "hello",
                 "RuntimeError: boom"):
        assert text in messages
    assert {r["logger"] for r in records} >= {"stderr", "py.warnings", "phototag.test"}


def test_scan_while_the_watcher_works_on_the_same_files_tags_each_once(tmp_path):
    """`phototag scan` and the watcher on one library and one folder at the same time: each photo
    goes through a model once (claims in the work queue), neither fails, nothing stays queued.

    The overlap is forced, not left to timing: the watcher tags one batch, then holds its next claims
    in the model until the scan has finished; the scan must leave those files to it."""
    home, root, log = tmp_path / "home", tmp_path / "Pictures", tmp_path / "daemon.log"
    release = tmp_path / "release"
    n = 96  # the watcher holds at most a batch in the model, the pool's 32 and a claim of 16: the scan gets the rest
    old = time.time() - 3600
    for i in range(n):  # there before the start: the watcher's catch-up pass queues them all at once
        os.utime(write_photo(root / f"p{i:02d}.jpg", i), (old, old))
    first = run_cli(home, "db", "status")
    assert first.returncode == 0, first.stderr
    proc = start_colour_daemon(home, root, 0.0, log, extra=("--hold-after", "1", "--release", str(release)))
    try:
        # one batch tagged, the next claimed and held in the model
        wait_for(lambda: (c := counts(home))[0] > 0 and c[3] > 0, 60, interval=0.1, what="the watcher holds claims")
        scan = run_cli(home, "scan", "--format", "json", "--batch-size", "4", str(root), timeout=600)
        assert scan.returncode == 0, scan.stderr[-3000:]
        release.touch()
        wait_for(lambda: (c := counts(home))[0] == n and c[2] == 0, 120, interval=0.3, what="all tagged")
    finally:
        release.touch()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(60)
    assert rc == 0, log.read_text()[-3000:]
    report = json.loads(scan.stdout)
    tagged, work, queued, claimed = counts(home)
    assert (tagged, queued, claimed) == (n, 0, 0)
    assert work == n, f"{work - n} photos were tagged twice"
    by_watcher = sum(e.get("count", 0) for e in log_events(log) if e.get("event") == "tagged")
    assert report["new"] + by_watcher == n and report["failed"] == 0
    assert report["busy"] > 0 and report["new"] > 0, report  # the scan met the watcher's claims, and tagged


def test_status_of_a_watcher_on_a_folder_not_named_in_utf8(tmp_path):
    """A watched folder whose name is not valid UTF-8 (an old archive, a NAS share): the watcher's
    state is written all the same (no temp file left behind) and `status` shows the folder."""
    home = tmp_path / "home"
    root = Path(os.fsdecode(os.fsencode(tmp_path) + b"/Fotos \xe9t\xe9"))
    root.mkdir()
    write_photo(root / "a.jpg", 1)
    log = tmp_path / "daemon.log"
    proc = start_colour_daemon(home, root, 0.0, log)
    try:
        wait_for(lambda: any(e.get("event") == "tagged" for e in log_events(log)), 60, what="the photo tagged")
        wait_for(lambda: (home / "watch.json").exists(), 10, what="the state file")
        status = run_cli(home, "status", "--format", "json")
        assert status.returncode == 0, status.stderr
        daemon = json.loads(status.stdout)["daemon"]
        assert daemon["running"] is True and daemon["model"] == "colour"
        assert [os.fsencode(r["path"]) for r in daemon["roots"]] == [os.fsencode(root)]
        assert [p.name for p in home.iterdir() if p.name.endswith(".tmp")] == []
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(60)
    assert rc == 0, log.read_text()[-3000:]


def test_state_file_is_replaced_whole_or_not_at_all(tmp_path):
    from phototag.watch.state import STATE_NAME, read_state, write_state

    write_state(tmp_path, {"roots": [{"path": os.fsdecode(b"/p/\xff"), "paused": False}], "model": "猫"})
    state = read_state(tmp_path)
    assert os.fsencode(state["roots"][0]["path"]) == b"/p/\xff" and state["model"] == "猫"
    loop: dict = {"model": "x"}
    loop["self"] = loop  # cannot be written: the old state stays, no temp file is left
    with pytest.raises(ValueError):
        write_state(tmp_path, loop)
    assert read_state(tmp_path)["model"] == "猫"
    assert sorted(p.name for p in tmp_path.iterdir()) == [STATE_NAME]


def test_a_starting_watcher_removes_the_state_file_a_killed_one_was_writing(tmp_path):
    from phototag.watch.lock import WatchLock
    from phototag.watch.state import STATE_NAME

    gone = subprocess.Popen([PY, "-c", "pass"])
    gone.wait()
    stale = tmp_path / f".{STATE_NAME}.{gone.pid}.1a2b3c4d.tmp"  # kill -9 in the middle of write_state
    stale.write_text("{", encoding="utf-8")
    live = tmp_path / f".{STATE_NAME}.{os.getpid()}.1a2b3c4d.tmp"  # another process is writing it now
    live.write_text("{", encoding="utf-8")
    with WatchLock(tmp_path):
        assert not stale.exists() and live.exists()


HIDE_FCNTL = """
import importlib.abc, sys

class HideFcntl(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "fcntl":
            raise ImportError("No module named 'fcntl'")
        return None

sys.meta_path.insert(0, HideFcntl())
sys.modules.pop("fcntl", None)
sys.argv[0] = "phototag"
from phototag.cli import main
main()
"""


def test_without_flock_watch_says_it_cannot_run_and_status_says_none_runs(tmp_path):
    """Windows has no fcntl: `phototag watch` is a one-line error (exit 2), `phototag status` works."""
    root = tmp_path / "Pictures"
    root.mkdir()
    home = tmp_path / "home"
    watch = subprocess.run([PY, "-c", HIDE_FCNTL, "--home", str(home), "watch", str(root)],
                           capture_output=True, text=True, timeout=120)
    assert watch.returncode == 2, watch.stderr
    assert "cannot run on this system" in watch.stdout + watch.stderr
    assert "Traceback" not in watch.stdout + watch.stderr
    status = subprocess.run([PY, "-c", HIDE_FCNTL, "--home", str(home), "status", "--format", "json"],
                            capture_output=True, text=True, timeout=120)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["daemon"]["running"] is False
