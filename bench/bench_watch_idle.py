"""Idle CPU of `phototag watch` on an already-tagged tree of 10,000 photos.

    .venv/bin/python bench/bench_watch_idle.py [--files 10000] [--seconds 40] [--polling]

Builds the tree (small real PNG files in 100 folders), tags it once with `Pipeline.scan` and a tiny
mean-colour model (the watcher's idle cost does not depend on the model: nothing is left to tag, so
the default model is never even loaded), then starts the real daemon
`python -m phototag --home H watch ROOT` and reads its CPU time from /proc/<pid>/stat: once for the
start-up (imports, inotify watches on every folder, the catch-up reconcile over 10,000 files) and
once over `--seconds` of idleness. Prints CPU seconds against wall seconds.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from watch.helpers import ColourTagger  # noqa: E402  (the tiny real model used by the tests)

from phototag.config import load_settings  # noqa: E402
from phototag.library import Library  # noqa: E402
from phototag.pipeline import Pipeline  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def build_tree(root: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    for i in range(n):
        folder = root / f"{2000 + i // 1000}" / f"{(i // 100) % 10:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(folder / f"IMG_{i:05d}.png")


def main() -> None:
    logging.getLogger("exifread").setLevel(logging.ERROR)  # one warning per PNG without EXIF
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--seconds", type=float, default=40.0)
    ap.add_argument("--polling", action="store_true", help="measure the polling observer instead of inotify")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="phototag-idle-") as tmp:
        tmp = Path(tmp)
        home, root = tmp / "home", tmp / "Pictures"
        t0 = time.perf_counter()
        build_tree(root, args.files)
        lib = Library(load_settings(home, environ={}))
        report = Pipeline(lib, ColourTagger()).scan([root])
        lib.close()
        print(f"tree: {args.files} photos in {sum(1 for _ in root.rglob('*') if _.is_dir())} folders, "
              f"tagged by scan in {time.perf_counter() - t0:.1f}s ({report.new} new, {report.failed} failed)")

        cmd = [sys.executable, "-m", "phototag", "--home", str(home), "watch", "--log-format", "json", str(root)]
        if args.polling:
            cmd.insert(-1, "--polling")
        log = tmp / "watch.log"
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(log, "wb"))
        try:
            while '"event": "reconciled"' not in log.read_text():
                if proc.poll() is not None:
                    raise SystemExit("watch exited:\n" + log.read_text())
                time.sleep(0.1)
            startup_wall = time.perf_counter() - started
            startup_cpu = cpu_seconds(proc.pid)
            time.sleep(1.0)  # let the catch-up settle
            cpu0, wall0 = cpu_seconds(proc.pid), time.perf_counter()
            time.sleep(args.seconds)
            cpu1, wall1 = cpu_seconds(proc.pid), time.perf_counter()
        finally:
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(60)
        idle_cpu, idle_wall = cpu1 - cpu0, wall1 - wall0
        mode = "polling" if args.polling else "inotify"
        print(f"start-up ({mode}, imports + watches + catch-up reconcile): {startup_cpu:.2f} s CPU in {startup_wall:.2f} s")
        print(f"idle: {idle_cpu:.3f} s CPU over {idle_wall:.1f} s wall = {100 * idle_cpu / idle_wall:.3f} % of one core")
        print(f"SIGTERM exit code: {rc}")


if __name__ == "__main__":
    main()
