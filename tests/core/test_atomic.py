"""phototag.atomic: the one way phototag replaces a file (real files, real processes, real kill -9)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from phototag import atomic


def test_replace_keeps_the_old_file_on_error_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "state.json"
    atomic.write_json(target, {"a": 1})
    os.chmod(target, 0o640)
    with pytest.raises(RuntimeError):
        with atomic.replacing(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("disk full")
    assert json.loads(target.read_text()) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]
    atomic.write_text(target, "new")
    assert target.read_text() == "new" and (target.stat().st_mode & 0o777) == 0o640  # mode kept
    fresh = tmp_path / "sub" / "fresh.txt"
    atomic.write_bytes(fresh, b"x")  # folders are made; a new file gets the usual mode, not mkstemp's 0600
    assert (fresh.stat().st_mode & 0o777) == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_json_with_an_odd_file_name_is_valid_utf8_that_reads_back_exactly(tmp_path):
    name = os.fsdecode(b"/photos/latin1_\xe9t\xe9.jpg")
    atomic.write_json(tmp_path / "s.json", {"root": name})
    raw = (tmp_path / "s.json").read_bytes()
    raw.decode("utf-8")  # strict: valid UTF-8
    assert json.loads(raw)["root"] == name


def test_two_writers_at_once_never_share_a_temp_file(tmp_path):
    target = tmp_path / "shared.txt"
    errors = []

    def write(n: int) -> None:
        try:
            for _ in range(50):
                atomic.write_text(target, str(n) * 1000)
        except Exception as exc:  # pragma: no cover - the failure this test looks for
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    text = target.read_text()
    assert len(text) == 1000 and len(set(text)) == 1  # one writer's whole content, never a mix
    assert [p.name for p in tmp_path.iterdir()] == ["shared.txt"]


def test_kill_9_mid_write_leaves_the_old_file_and_its_temp_file_is_swept(tmp_path):
    target = tmp_path / "big.bin"
    atomic.write_bytes(target, b"old")
    script = (
        "import sys, time\n"
        "from phototag import atomic\n"
        "with atomic.replacing(sys.argv[1]) as tmp, open(tmp, 'wb') as f:\n"
        "    f.write(b'x' * 1000); f.flush(); print('writing', flush=True); time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(target)], stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert target.read_bytes() == b"old"
    leftovers = [p for p in tmp_path.iterdir() if p.name != "big.bin"]
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".big.bin.")
    assert atomic.remove_stale_temp_files(tmp_path) == leftovers  # its writer is dead
    with atomic.replacing(target) as mine:  # a live writer's temp file is kept
        mine.write_bytes(b"new")
        assert atomic.remove_stale_temp_files(tmp_path) == [] and mine.exists()
    assert target.read_bytes() == b"new"


def test_a_cache_write_skips_fsync_but_still_replaces_whole(tmp_path, monkeypatch):
    """durable=False (thumbnails): no fsync of file or folder, the old file replaced only when the block ends."""
    import os

    from phototag import atomic

    target = tmp_path / "thumb.jpg"
    target.write_bytes(b"old")
    calls = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real_fsync(fd)))
    with atomic.replacing(target, durable=False) as tmp:
        tmp.write_bytes(b"new")
        assert target.read_bytes() == b"old"
    assert target.read_bytes() == b"new"
    assert calls == []
    atomic.write_bytes(target, b"durable")
    assert len(calls) == 2  # the file and its folder
