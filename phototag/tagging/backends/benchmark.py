"""``phototag models benchmark``: measure each runtime / precision of a pack on this machine and record it.

Every candidate tags the same photos; its photos/s is timed after a one-photo warm-up (which pays the
load and, the first time, the ONNX export), and its tags are compared with torch fp32's (mean
tag-set Jaccard). The record (:mod:`.choice`) is what ``backend = "auto"`` reads afterwards.

Photos: the user's (``--photos``), else a few generated ones — gradients, shapes and noise at a
photo's size, the same on every machine — so a benchmark never needs a library or a download.

Memory: each candidate's peak RSS growth while it loads and runs (Linux: the peak is reset through
``/proc/self/clear_refs`` before each one, after the previous one is closed and the heap trimmed), plus
torch's own import for the torch candidates (measured in a fresh interpreter: a scan on ONNX Runtime
or OpenVINO never imports it). A candidate that would take a scan over the pack's size + 1 GiB is not
chosen by ``auto`` (issue 13's bound), however fast: on a 2-core AVX-512 EPYC with a full-size RAM++
pack, OpenVINO fp32 ran 1.2× ONNX Runtime fp32 but a scan with it peaked at 3060 MiB against a bound
of 2281.
"""

from __future__ import annotations

import gc
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

from ..device import resolve_precision
from .choice import SCAN_RESERVE_MIB, Candidate, Choice, best_candidate, choose_backend, machine_fingerprint, write_record

PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".heic", ".heif"}


def generated_photos(count: int = 4, size: tuple[int, int] = (640, 480), seed: int = 7):
    """``count`` photo-like RGB images: a sky-to-ground gradient, a few soft shapes, sensor-like noise."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFilter

    rng = np.random.default_rng(seed)
    width, height = size
    photos = []
    for i in range(count):
        top, bottom = rng.integers(40, 230, 3), rng.integers(20, 200, 3)
        t = np.linspace(0, 1, height)[:, None, None]
        img = (top * (1 - t) + bottom * t) * np.ones((1, width, 1))
        image = Image.fromarray(img.astype(np.uint8))
        draw = ImageDraw.Draw(image)
        for _ in range(3 + i):
            x0, y0 = int(rng.integers(0, width - 60)), int(rng.integers(0, height - 60))
            x1, y1 = x0 + int(rng.integers(40, width // 2)), y0 + int(rng.integers(40, height // 2))
            fill = tuple(int(v) for v in rng.integers(0, 255, 3))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=fill)
        image = image.filter(ImageFilter.GaussianBlur(2))
        noisy = np.asarray(image, dtype=np.float32) + rng.normal(0, 6, (height, width, 3))
        photos.append(Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)))
    return photos


def photos_from(paths: Iterable[Path], limit: int = 8):
    """Up to ``limit`` photos from files and folders (EXIF-oriented RGB)."""
    from PIL import Image, ImageOps

    files: list[Path] = []
    for path in paths:
        path = Path(path)
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.suffix.lower() in PHOTO_SUFFIXES and p.is_file())
        else:
            files.append(path)
    out = []
    for f in files:
        if len(out) >= limit:
            break
        try:
            with Image.open(f) as im:
                out.append(ImageOps.exif_transpose(im).convert("RGB"))
        except OSError:
            continue
    return out


def candidate_list(device_type: str, cpu_bf16: bool, installed: Callable[[str], bool]) -> list[tuple[str, str]]:
    """(backend, precision) pairs worth measuring here; torch fp32 (the reference) first."""
    if device_type != "cpu":
        return [("torch", "fp32"), ("torch", "bf16"), ("torch", "fp16")] if device_type == "cuda" else \
            [("torch", "fp32"), ("torch", "fp16")]
    pairs = [("torch", "fp32")] + ([("torch", "bf16")] if cpu_bf16 else [])
    if installed("onnxruntime"):
        pairs += [("onnxruntime", "fp32"), ("onnxruntime", "int8")]
    if installed("openvino"):
        pairs += [("openvino", "fp32")] + ([("openvino", "bf16")] if cpu_bf16 else [])
    return pairs


def tag_jaccard(a, b) -> float:
    """Mean over photos of |A ∩ B| / |A ∪ B| of the two predictions' tag names (1 when both are empty)."""
    scores = []
    for pa, pb in zip(a, b):
        ta, tb = {t.name for t in pa.tags}, {t.name for t in pb.tags}
        scores.append(len(ta & tb) / len(ta | tb) if ta | tb else 1.0)
    return statistics.mean(scores) if scores else 1.0


def _status_mib(field: str) -> float | None:
    """``VmRSS`` / ``VmHWM`` of this process in MiB (None off Linux)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _reset_peak() -> float | None:
    """Free what earlier candidates left, reset the peak RSS to the current RSS; the RSS in MiB (or None)."""
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)  # give freed heap back, so the next candidate's growth shows
    except (OSError, AttributeError):
        pass
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")  # Linux ≥ 4.0: the high-water mark starts again from the current RSS
    except OSError:
        return None
    return _status_mib("VmRSS")


#: prints the peak RSS (MiB) of a fresh interpreter after importing argv[1] ("" = nothing)
_IMPORT_PEAK = """
import importlib, sys
if sys.argv[1]:
    importlib.import_module(sys.argv[1])
print(next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:")) / 1024)
"""


def import_cost_mib(module: str) -> float | None:
    """What importing ``module`` adds to a fresh interpreter's peak RSS (None where that cannot be read)."""
    try:
        peaks = [float(subprocess.run([sys.executable, "-c", _IMPORT_PEAK, name], capture_output=True, text=True,
                                      timeout=300, check=True).stdout) for name in ("", module)]
    except (OSError, ValueError, subprocess.SubprocessError):
        return None
    return max(0.0, peaks[1] - peaks[0])


def memory_budget_mib(tagger) -> float:
    """What a candidate may add to a scan: the pack's weights + 1 GiB, less the scan's own process."""
    return tagger.weights_path.stat().st_size / 2**20 + 1024 - SCAN_RESERVE_MIB


@dataclass
class BenchmarkResult:
    candidates: list[Candidate]
    choice: Choice | None
    record: Path | None
    photos: int
    fingerprint: dict = field(default_factory=dict)


def measure(tagger, photos: Sequence, pairs: Sequence[tuple[str, str]], *, rounds: int = 1,
            report: Callable[[str], None] = lambda _m: None, memory_budget: float | None = None) -> list[Candidate]:
    """Time each (backend, precision) variant of ``tagger`` on ``photos``; the first pair is the reference.
    ``memory_budget`` (MiB): what a candidate may add to a process and still be chosen by ``auto``."""
    batch = [tagger.prepare(p) for p in photos]
    size = max(1, tagger.batch_size)
    torch_cost = None
    if any(backend == "torch" for backend, _ in pairs):
        import torch  # noqa: F401  (imported before any measurement: its cost is counted apart)

        torch_cost = import_cost_mib("torch")
    reference = None
    out: list[Candidate] = []
    for backend, precision in pairs:
        report(f"measuring {backend} {precision} …")
        try:
            variant = tagger.variant(backend, precision)
            variant.export()  # once per pack (its cost is recorded apart), not part of what a scan holds
            base = _reset_peak()
            t0 = time.perf_counter()
            variant.predict(batch[:1])  # load and warm up
            load_s = time.perf_counter() - t0
            best = float("inf")
            preds = []
            for _ in range(max(1, rounds)):
                t0 = time.perf_counter()
                preds = []
                for i in range(0, len(batch), size):
                    preds += variant.predict(batch[i:i + size])
                best = min(best, time.perf_counter() - t0)
            export_s = variant.exports.cost(precision) if backend != "torch" else None
            peak = _status_mib("VmHWM")
            variant.close()
        except Exception as exc:  # one runtime failing must not lose the others' measurements
            out.append(Candidate(backend, precision, 0.0, 0.0, note=f"failed: {type(exc).__name__}: {exc}"[:200]))
            continue
        if reference is None:
            reference = preds
        memory = None
        if base is not None and peak is not None and (backend != "torch" or torch_cost is not None):
            memory = round(peak - base + (torch_cost if backend == "torch" else 0.0), 1)
        fits = memory is None or memory_budget is None or memory <= memory_budget
        out.append(Candidate(backend, precision, round(len(batch) / best, 4), round(tag_jaccard(reference, preds), 4),
                             round(load_s, 2), None if export_s is None else round(export_s, 2),
                             note="" if fits else f"over the memory bound ({memory:.0f} > {memory_budget:.0f} MiB)",
                             memory_mib=memory, fits_memory=fits))
    return out


def benchmark_pack(tagger, photos: Sequence | None = None, *, rounds: int = 1, record: bool = True,
                   report: Callable[[str], None] = lambda _m: None) -> BenchmarkResult:
    """Measure every candidate of a pack's tagger here and record the result in its folder."""
    from importlib import metadata

    from ..device import cpu_supports_bf16

    def installed(package: str) -> bool:
        try:
            metadata.version(package)
            return True
        except metadata.PackageNotFoundError:
            return False

    photos = list(photos) if photos else generated_photos()
    device = tagger.device_type
    pairs = candidate_list(device, device == "cpu" and cpu_supports_bf16(), installed)
    candidates = measure(tagger, photos, pairs, rounds=rounds, report=report, memory_budget=memory_budget_mib(tagger))
    fingerprint = machine_fingerprint()
    path = write_record(tagger.pack_dir, tagger.weights_sha256, candidates, device, fingerprint) if record else None
    best = best_candidate(candidates)
    if best is not None:
        choice = Choice(best.backend, best.precision, "the fastest whose tags agree with fp32 within the memory bound")
    else:  # what choose_backend falls back to when no measured candidate is eligible
        fallback = choose_backend("auto", "auto", device, None, tagger.weights_sha256, resolve_precision("auto", device))
        choice = Choice(fallback.backend, fallback.precision, "no candidate is eligible: the unmeasured default")
    return BenchmarkResult(candidates, choice, path, len(photos), fingerprint)


__all__ = ["BenchmarkResult", "benchmark_pack", "candidate_list", "generated_photos", "import_cost_mib", "measure",
           "memory_budget_mib", "photos_from", "tag_jaccard"]
