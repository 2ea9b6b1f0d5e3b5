"""End-to-end `scan` throughput against the model alone, same photos, one run.

    .venv/bin/python bench/bench_scan_throughput.py [--photos 64] [--batch-sizes 8,16,32] [--size 640]
    .venv/bin/python bench/bench_scan_throughput.py --model ram_plus --photos 24 --batch-sizes 1,4,8

``--model builtin`` (default) uses the built-in model; ``--model ram_plus`` installs a full-size RAM++
pack (Swin-L, 4585 tags) made from the state-dict manifest in ../shared/ram-data with synthetic
weights (same architecture and cost as the released checkpoint) and runs it at the precision
phototag picks on this machine (bf16 where the CPU supports it).

Photos: scikit-image's and scikit-learn's real photos (cat, coffee, astronaut, rocket, China, flower),
cropped, flipped, rotated, colour-shifted and resized into N distinct JPEG files.

* model alone: every photo decoded and prepared beforehand (not timed), then `BuiltinTagger.predict`
  timed at each batch size; the best photos/s counts;
* end to end: `Pipeline.scan` of the folder into a fresh library (hash, decode, EXIF, prepare in the
  decode pool, inference, SQLite commits) with the same, already loaded, tagger at that batch size.

Prints both rates and their ratio (goal: ≥ 0.95×), and a second reference: decode + prepare, then the
model, one after the other (what the pipeline's overlap has to beat). On a CPU the model's own `prepare` (resizing, face
detection) runs in the decode pool and competes with inference for the same cores; that cost is in
the end-to-end figure and not in the model-alone one, as the pipeline must pay it.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from phototag.config import load_settings
from phototag.ingest.decode import decode_photo
from phototag.library import Library
from phototag.pipeline import Pipeline
from phototag.tagging.builtin import BuiltinTagger

REPO = Path(__file__).resolve().parents[1]
RAM_DATA = REPO.parent / "shared" / "ram-data"


def ram_plus_tagger(home: Path):
    """A full-size RAM++ pack with synthetic weights, installed through the real `models add` path."""
    import torch

    from phototag.tagging.packs import add_pack, load_pack_tagger
    from phototag.tagging.synthetic import official_checkpoint, read_manifest, read_tied, synthetic_state_dict

    manifest = RAM_DATA / "manifests" / "ram_plus_swin_l_384"
    state = synthetic_state_dict(read_manifest(f"{manifest}.tsv"), read_tied(f"{manifest}.tied.tsv"), seed=1234)
    checkpoint = home / "ram_plus_swin_large_14m.pth"
    home.mkdir(parents=True, exist_ok=True)
    torch.save(official_checkpoint(state), checkpoint)
    del state
    data = RAM_DATA / "ram" / "data"
    models = home / "models"
    add_pack(models, "ram_plus", checkpoint, data / "ram_tag_list.txt", data / "ram_tag_list_chinese.txt",
             data / "ram_tag_list_threshold.txt")
    checkpoint.unlink()
    return load_pack_tagger(models, "ram_plus")


def source_photos() -> list[Image.Image]:
    from skimage import data as skdata
    from sklearn.datasets import load_sample_images

    images = [Image.fromarray(getattr(skdata, n)()).convert("RGB") for n in ("chelsea", "coffee", "astronaut", "rocket")]
    images += [Image.fromarray(a).convert("RGB") for a in load_sample_images().images]
    return images


def make_photos(folder: Path, n: int, size: int) -> list[Path]:
    rng = np.random.default_rng(0)
    sources = source_photos()
    paths = []
    for i in range(n):
        img = sources[i % len(sources)]
        w, h = img.size
        scale = rng.uniform(0.6, 1.0)
        cw, ch = int(w * scale), int(h * scale)
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        out = img.crop((x, y, x + cw, y + ch))
        if rng.random() < 0.5:
            out = ImageOps.mirror(out)
        out = out.rotate(float(rng.uniform(-8, 8)), resample=Image.BILINEAR)
        out = ImageEnhance.Color(out).enhance(float(rng.uniform(0.7, 1.3)))
        out = ImageEnhance.Brightness(out).enhance(float(rng.uniform(0.8, 1.2)))
        out.thumbnail((size, size))
        path = folder / f"photo_{i:04d}.jpg"
        out.save(path, quality=90)
        paths.append(path)
    return paths


def main() -> None:
    logging.getLogger("exifread").setLevel(logging.ERROR)  # one warning per PNG without EXIF
    ap = argparse.ArgumentParser()
    ap.add_argument("--photos", type=int, default=64)
    ap.add_argument("--batch-sizes", default="8,16,32")
    ap.add_argument("--size", type=int, default=640, help="long side of the generated photos")
    ap.add_argument("--workers", type=int, default=0, help="scan's decode threads (0 = the pipeline's default)")
    ap.add_argument("--model", choices=("builtin", "ram_plus"), default="builtin")
    args = ap.parse_args()
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="phototag-bench-") as tmp:
        tmp = Path(tmp)
        folder = tmp / "photos"
        folder.mkdir()
        paths = make_photos(folder, args.photos, args.size)
        tagger = BuiltinTagger() if args.model == "builtin" else ram_plus_tagger(tmp / "home")
        t0 = time.perf_counter()
        prepared = [tagger.prepare(decode_photo(p).image) for p in paths]
        prepare_seconds = time.perf_counter() - t0  # decode + the model's prepare, one thread
        tagger.predict(prepared[: min(batch_sizes)])  # load the model, warm up

        best_rate, best_bs = 0.0, batch_sizes[0]
        for bs in batch_sizes:
            t0 = time.perf_counter()
            for start in range(0, len(prepared), bs):
                tagger.predict(prepared[start:start + bs])
            rate = len(prepared) / (time.perf_counter() - t0)
            print(f"model alone, batch {bs:3d}: {rate:7.2f} photos/s")
            if rate > best_rate:
                best_rate, best_bs = rate, bs

        lib = Library(load_settings(tmp / "home", environ={}))
        t0 = time.perf_counter()
        report = Pipeline(lib, tagger, batch_size=best_bs, decode_workers=args.workers or None).scan([folder])
        scan_seconds = time.perf_counter() - t0
        lib.close()
        scan_rate = report.tagged / scan_seconds
        print(f"scan end to end, batch {best_bs}: {scan_rate:7.2f} photos/s "
              f"({report.tagged} tagged, {report.failed} failed, {report.model_seconds:.1f}s of {scan_seconds:.1f}s in the model)")
        print(f"ratio scan / model alone: {scan_rate / best_rate:.3f}x  "
              f"({args.photos} photos of {args.size}px, {os.cpu_count()} CPUs, {tagger.name} model)")
        print(f"share of scan's wall time spent in the model: {report.model_seconds / scan_seconds:.1%} "
              "(the rest is discovery, decode and database work the overlap did not hide)")
        serial_rate = len(paths) / (prepare_seconds + len(paths) / best_rate)
        print(f"reference: decode + prepare ({prepare_seconds / len(paths) * 1000:.0f} ms/photo, one thread) then "
              f"the model, one after the other: {serial_rate:.2f} photos/s; scan / that: {scan_rate / serial_rate:.3f}x")


if __name__ == "__main__":
    main()
