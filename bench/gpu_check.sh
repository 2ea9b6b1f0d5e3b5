#!/usr/bin/env bash
# phototag on an NVIDIA GPU, in one run (~8 minutes at most): photos/s of `scan` with the full-size RAM++
# pack at fp32, bf16 and fp16, the GPU's busy fraction while it tags, and the tag agreement with fp32.
#
#   bash bench/gpu_check.sh [PHOTOS]        # PHOTOS: how many to scan (default 512, at least 500 counts)
#
# Runs in the current Python (PYTHON=... to choose one); installs phototag into it (pip install -e .) when
# it is not importable. Needs ../shared/ram-data (or RAM_DATA=...) for the RAM++ state-dict manifest and tag
# lists: the pack is built from synthetic weights of the released architecture (Swin-L, 4585 tags), so
# speed and memory are the real model's; tags are not meaningful, but their agreement across precisions is.
# Photos: scikit-image's and scikit-learn's real photos, cropped/flipped/rotated/colour-shifted into
# PHOTOS distinct JPEGs (bench/bench_scan_throughput.py). Each precision scans them into a fresh library
# with phototag's own pipeline at its defaults (decode on every core, batch sized to the GPU's memory,
# pinned memory); photos/s leaves out the model's load time, which is printed apart.
# On a machine without an NVIDIA GPU it says so and exits with status 3 at once.
set -euo pipefail
cd "$(dirname "$0")/.."
PHOTOS="${1:-512}"
PY="${PYTHON:-python}"
command -v "$PY" >/dev/null 2>&1 || PY=python3

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "gpu_check: no NVIDIA GPU here (nvidia-smi is missing or finds no GPU); nothing measured" >&2
    exit 3
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

if ! "$PY" -c "import phototag" >/dev/null 2>&1; then
    echo "gpu_check: installing phototag into $("$PY" -c 'import sys; print(sys.prefix)')"
    "$PY" -m pip install -q -e .
fi
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: no NVIDIA GPU usable by torch (a CPU-only torch build, or the driver is too old)" >&2
    exit 3
fi

exec "$PY" - "$PHOTOS" <<'PYTHON'
import logging
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

START = time.perf_counter()
BUDGET = 8 * 60  # seconds: the precisions that do not fit are reported as skipped
REPO = Path.cwd()
sys.path.insert(0, str(REPO / "bench"))
logging.getLogger("exifread").setLevel(logging.ERROR)
n_photos = int(sys.argv[1])

ram_data = Path(os.environ.get("RAM_DATA") or REPO.parent / "shared" / "ram-data")
if not (ram_data / "manifests" / "ram_plus_swin_l_384.tsv").is_file():
    alt = REPO / "shared" / "ram-data"
    ram_data = alt if alt.is_dir() else ram_data
if not (ram_data / "manifests" / "ram_plus_swin_l_384.tsv").is_file():
    sys.exit(f"gpu_check: no RAM++ manifest under {ram_data} (set RAM_DATA to the ram-data folder)")

import torch

import bench_scan_throughput as bst
from phototag.config import load_settings
from phototag.library import Library
from phototag.pipeline import Pipeline
from phototag.tagging.packs import load_pack_tagger

bst.RAM_DATA = ram_data
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)}, "
      f"{os.cpu_count()} CPUs; bf16 native: {torch.cuda.is_bf16_supported()}", flush=True)


class GpuBusy:
    """nvidia-smi's utilization.gpu sampled every 100 ms (the share of time a kernel was running)."""

    def __init__(self):
        self.samples: list[tuple[float, int]] = []
        self.proc = subprocess.Popen(
            ["nvidia-smi", "-i", "0", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-lms", "100"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            try:
                self.samples.append((time.perf_counter(), int(line.strip())))
            except ValueError:
                pass

    def fraction(self, t0: float, t1: float) -> float | None:
        window = [v for t, v in self.samples if t0 <= t <= t1]
        return sum(window) / len(window) / 100 if window else None

    def stop(self):
        self.proc.terminate()


def model_tags(db: Path) -> dict[str, set[str]]:
    con = sqlite3.connect(db)
    rows = con.execute("SELECT p.path, t.name FROM photo_tags pt JOIN photos p ON p.id = pt.photo_id "
                       "JOIN tags t ON t.id = pt.tag_id WHERE pt.source = 'model'").fetchall()
    con.close()
    out: dict[str, set[str]] = {}
    for path, name in rows:
        out.setdefault(str(path), set()).add(name)
    return out


with tempfile.TemporaryDirectory(prefix="phototag-gpu-") as tmp:
    tmp = Path(tmp)
    folder = tmp / "photos"
    folder.mkdir()
    t = time.perf_counter()
    bst.make_photos(folder, n_photos, 640)
    print(f"{n_photos} photos made in {time.perf_counter() - t:.0f} s", flush=True)
    t = time.perf_counter()
    bst.ram_plus_tagger(tmp / "pack")  # installs the pack under tmp/pack/models
    models = tmp / "pack" / "models"
    pack_mb = sum(f.stat().st_size for f in (models / "ram_plus").rglob("*") if f.is_file()) / 2**20
    print(f"RAM++ pack ({pack_mb:.0f} MB, synthetic weights) built in {time.perf_counter() - t:.0f} s", flush=True)

    busy = GpuBusy()
    results = {}
    precisions = ["fp32", "bf16", "fp16"]
    try:
        for precision in precisions:
            if precision == "bf16" and not torch.cuda.is_bf16_supported():
                print("bf16: not supported by this GPU, skipped")
                continue
            if time.perf_counter() - START > BUDGET - 60:
                print(f"{precision}: skipped (the {BUDGET // 60}-minute budget is spent)")
                continue
            tagger = load_pack_tagger(models, "ram_plus", device="cuda", precision=precision)
            home = tmp / f"home-{precision}"
            lib = Library(load_settings(home, environ={}))
            pipeline = Pipeline(lib, tagger)
            torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            report = pipeline.scan([folder])
            t1 = time.perf_counter()
            lib.close()
            fraction = busy.fraction(t0 + report.load_seconds, t1)
            results[precision] = model_tags(home / "phototag.db")
            tagger.close()
            print(f"{precision}: {report.photos_per_second:7.1f} photos/s "
                  f"({report.tagged} tagged, {report.failed} failed; model load {report.load_seconds:.1f} s apart; "
                  f"batch {pipeline.batch_size}, {pipeline.decode_workers} decoders; "
                  f"{report.model_seconds:.1f} s of {report.tagging_seconds:.1f} s in predict); GPU busy "
                  + ("n/a" if fraction is None else f"{fraction:.0%}")
                  + f"; peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB", flush=True)
            torch.cuda.empty_cache()
    finally:
        busy.stop()

    base = results.get("fp32")
    for precision, tags in results.items():
        if precision == "fp32" or base is None:
            continue
        jaccards = [len(base[p] & tags.get(p, set())) / max(1, len(base[p] | tags.get(p, set()))) for p in base]
        same = sum(base[p] == tags.get(p, set()) for p in base)
        mean = sum(jaccards) / max(1, len(jaccards))
        print(f"{precision} vs fp32: mean tag-set Jaccard {mean:.4f}, identical tag sets {same}/{len(base)}, "
              f"worst {min(jaccards, default=1):.3f}")
print(f"gpu_check: done in {time.perf_counter() - START:.0f} s")
PYTHON
