"""The daemon as a separate process: kill -9 at any moment loses and duplicates nothing; one watcher
per home; status; SIGTERM; JSON logs; the systemd unit."""

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

from phototag.config import load_settings
from phototag.db.models import Photo, WorkItem
from phototag.library import Library
from watch.helpers import model_work, photo_bytes, wait_for, write_photo

HERE = Path(__file__).resolve().parent
PY = sys.executable


def start_colour_daemon(home: Path, root: Path, delay: float, log: Path, stable: float = 0.5) -> subprocess.Popen:
    return subprocess.Popen([PY, str(HERE / "run_watcher.py"), str(home), str(root), "--delay", str(delay),
                             "--stable", str(stable)],
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
    from phototag.daemon import service_unit

    root = Path("/p/My Pics $HOME 50% \"x\" a\\b 'q'")
    text = service_unit(Path("/h/ph"), [root], command=["/usr/bin/phototag"])
    exec_start = next(line for line in text.splitlines() if line.startswith("ExecStart="))
    assert exec_start == ("ExecStart=/usr/bin/phototag --home /h/ph watch --log-format json "
                          "\"/p/My Pics $$HOME 50%% \\\"x\\\" a\\\\b 'q'\"")
