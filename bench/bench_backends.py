"""RAM / RAM++ on this CPU: the naive per-photo loop vs every runtime/precision, photos/s and tag agreement, in one run.

Candidates, all timed from the photo file to the tags (open, EXIF-orient, squash to 384, normalise,
model, sigmoid, threshold):

* ``naive loop`` — the official scripts' way: one photo at a time, eager torch fp32, no phototag code
  beyond the model class;
* ``torch fp32`` / ``torch bf16`` (where oneDNN has bf16 kernels) — RamTagger, batches of ``--batch``;
* ``onnxruntime fp32`` / ``onnxruntime int8`` (dynamic int8 weights) and ``openvino fp32`` /
  ``openvino bf16`` — RamTagger on the ONNX export (made once; its cost is printed);
* ``phototag scan, defaults`` — the whole scan of the photos' folder into a fresh library at the default
  settings (``backend = "auto"``: without a benchmark record, ONNX Runtime fp32), hashing, EXIF and SQLite
  included, photos/s over the scan time less the model load.

Candidates alternate within each round (so load from other processes hits all alike) and the best
round counts. Agreement: mean tag-set Jaccard with torch fp32 over the photos, the largest score
difference and the smallest embedding cosine. The weights are the synthetic full-size state dict
(manifest, seed 1234: real weights cannot be downloaded here), so agreement only measures each
runtime's numeric effect near the thresholds; re-run with real weights (``--weights``) to judge tags.

``--avx2`` then runs the naive loop, torch fp32 and OpenVINO fp32 again in a subprocess with
``ONEDNN_MAX_CPU_ISA=AVX2``, ``ATEN_CPU_CAPABILITY=avx2`` and ``MKL_ENABLE_INSTRUCTIONS=AVX2``: torch's
own kernels, oneDNN, MKL and OpenVINO's CPU plugin (built on oneDNN: it honours the cap, 1.19 → 0.83
photos/s for RAM++ on an AVX-512 EPYC) are capped to AVX2, what an AVX2-only machine runs. ONNX
Runtime (MLAS) picks its kernels from cpuid and cannot be capped this way: its figures on an AVX-512
machine overstate an AVX2 machine's.

Run: ``.venv/bin/python bench/bench_backends.py [--kind ram|ram_plus] [--photos N] [--rounds 1] [--avx2] [--keep DIR]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ram_precision import DATA, load_photos, make_weights  # noqa: E402  (same folder)

from phototag.tagging.backends.benchmark import tag_jaccard  # noqa: E402
from phototag.tagging.device import cpu_supports_bf16  # noqa: E402
from phototag.tagging.ram_tagger import MEAN, STD, RamTagger  # noqa: E402
from phototag.tagging.vocab import ram_vocabulary  # noqa: E402
from phototag.tagging.weights import load_pack_model, sha256_file  # noqa: E402

AVX2_ENV = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}


class NaiveLoop:
    """The official inference script's loop: per photo, open → Resize((384, 384)) → ToTensor → Normalize →
    model → sigmoid → per-class threshold. No batching, no phototag tagger."""

    label = "naive loop (torch fp32, batch 1)"

    def __init__(self, weights: Path, thresholds: np.ndarray):
        self.model, _ = load_pack_model(weights)
        self.thresholds = torch.from_numpy(thresholds)
        self.mean, self.std = torch.tensor(MEAN).view(3, 1, 1), torch.tensor(STD).view(3, 1, 1)

    @torch.inference_mode()
    def tags(self, files: list[Path]) -> list[set[int]]:
        out = []
        for f in files:
            with Image.open(f) as im:
                rgb = ImageOps.exif_transpose(im).convert("RGB").resize((384, 384), Image.BILINEAR)
            x = torch.from_numpy(np.asarray(rgb).copy()).permute(2, 0, 1).float().div(255)
            x = ((x - self.mean) / self.std).unsqueeze(0)
            scores = torch.sigmoid(self.model(x))[0]
            out.append(set(torch.nonzero(scores > self.thresholds).flatten().tolist()))
        return out


def run_tagger(tagger: RamTagger, files: list[Path], batch: int):
    preds = []
    for i in range(0, len(files), batch):
        prepared = []
        for f in files[i:i + batch]:
            with Image.open(f) as im:
                prepared.append(tagger.prepare(ImageOps.exif_transpose(im).convert("RGB")))
        preds += tagger.predict(prepared)
    return preds


def agreement(ref, preds) -> dict:
    dscore = [float(np.abs(a.scores - b.scores).max()) for a, b in zip(ref, preds)]
    cos = [float(a.embedding @ b.embedding) for a, b in zip(ref, preds) if a.embedding is not None]
    return {"jaccard": tag_jaccard(ref, preds), "identical": sum({t.name for t in a.tags} == {t.name for t in b.tags}
                                                                for a, b in zip(ref, preds)),
            "max_dscore": max(dscore), "min_cos": min(cos) if cos else 1.0}


def measure(args, weights: Path, sha: str, pack_dir: Path, files: list[Path], capped: bool) -> list[dict]:
    vocab = ram_vocabulary(DATA / "ram_tag_list.txt", DATA / "ram_tag_list_threshold.txt",
                           DATA / "ram_tag_list_chinese.txt")
    base = RamTagger("bench", args.kind, weights, vocab, sha, precision="fp32", backend="torch",
                     batch_size=args.batch, pack_dir=pack_dir)
    # capped to AVX2 the CPU still says it has bf16 kernels, but an AVX2 machine has none
    pairs = [("torch", "fp32")] + ([("torch", "bf16")] if cpu_supports_bf16() and not capped else [])
    if capped:
        pairs += [("openvino", "fp32")]
    else:
        pairs += [("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("openvino", "fp32")]
        pairs += [("openvino", "bf16")] if cpu_supports_bf16() else []
    runs: dict[str, dict] = {}
    t = time.perf_counter()
    naive = NaiveLoop(weights, np.asarray(vocab.thresholds, dtype=np.float32))
    naive.tags(files[:1])
    runs["naive"] = {"label": NaiveLoop.label, "load_s": time.perf_counter() - t, "times": [], "run": naive}
    for backend, precision in pairs:
        tagger = base.variant(backend, precision)
        t = time.perf_counter()
        tagger.predict([tagger.prepare(Image.open(files[0]).convert("RGB"))])  # load (+ export) and warm up
        load = time.perf_counter() - t
        export = tagger.exports.cost(precision) if backend != "torch" else None
        runs[f"{backend} {precision}"] = {"label": f"{backend} {precision} (batch {args.batch})", "load_s": load,
                                          "export_s": export, "times": [], "run": tagger}
        print(f"  loaded {backend} {precision} in {load:.1f} s" + (f" (export {export:.1f} s)" if export else ""),
              flush=True)
    preds = {}
    for r in range(args.rounds):
        for key, entry in runs.items():
            t = time.perf_counter()
            out = entry["run"].tags(files) if key == "naive" else run_tagger(entry["run"], files, args.batch)
            entry["times"].append(time.perf_counter() - t)
            preds[key] = out
            print(f"  round {r + 1}: {key} {len(files) / entry['times'][-1]:.3f} photos/s", flush=True)
    ref = preds["torch fp32"]
    naive_ps = len(files) / min(runs["naive"]["times"])
    scan = None if capped else scan_at_defaults(args, weights, sha, pack_dir, files, vocab)
    rows = []
    for key, entry in runs.items():
        ps = len(files) / min(entry["times"])
        row = {"key": key, "label": entry["label"], "photos_per_s": ps, "vs_naive": ps / naive_ps,
               "load_s": entry["load_s"], "export_s": entry.get("export_s")}
        if key == "naive":
            ids = [{vocab.names[i] for i in s} for s in preds["naive"]]
            tags = [{t.name for t in p.tags} for p in ref]
            row["jaccard"] = statistics.mean(len(a & b) / len(a | b) if a | b else 1.0 for a, b in zip(ids, tags))
        else:
            row.update(agreement(ref, preds[key]))
        rows.append(row)
        if key != "naive":
            entry["run"].close()
    if scan is not None:
        ps = len(files) / scan["seconds"]
        ref_tags = [{t.name for t in p.tags} for p in ref]
        rows.append({"key": "scan", "label": f"phototag scan, defaults ({scan['choice']})", "photos_per_s": ps,
                     "vs_naive": ps / naive_ps, "load_s": float("nan"), "export_s": None,
                     "jaccard": statistics.mean(len(a & b) / len(a | b) if a | b else 1.0
                                                for a, b in zip(scan["tags"], ref_tags))})
    return rows


def scan_at_defaults(args, weights: Path, sha: str, pack_dir: Path, files: list[Path], vocab) -> dict:
    """``phototag scan`` of the photos' folder into a fresh library, as a user runs it: the pack's tagger
    with ``backend = "auto"`` and every other setting at its default (batch, decode workers, precision),
    hashing, EXIF and SQLite commits included. Photos/s over the tagging time (the run less the model's
    load, which the naive loop's figure leaves out too); best of ``--rounds`` fresh scans."""
    from phototag.config import load_settings
    from phototag.library import Library
    from phototag.pipeline import Pipeline

    best, tags, choice = None, None, None
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory() as home:
            lib = Library(load_settings(Path(home)))
            tagger = RamTagger("bench", args.kind, weights, vocab, sha, backend="auto", pack_dir=pack_dir)
            choice = f"{tagger.backend} {tagger.precision}"
            report = Pipeline(lib, tagger).scan([files[0].parent])
            assert report.new == len(files) and report.failed == 0, report.as_dict()
            if best is None or report.tagging_seconds < best:
                best = report.tagging_seconds
                with lib.session() as session:
                    tags = [{t["name"] for t in lib.photo_tags(session, lib.photo_by_path(session, f).id)}
                            for f in files]
            tagger.close()
            lib.close()
    return {"seconds": best, "tags": tags, "choice": choice}


def print_rows(rows: list[dict], title: str, n: int, note: dict[str, str] | None = None) -> None:
    print(f"\n{title}")
    print(f"{'candidate':<34}{'photos/s':>9}{'× naive':>9}{'Jaccard':>9}{'max Δscore':>11}{'min cos':>9}"
          f"{'load s':>8}{'export s':>9}")
    for r in rows:
        print(f"{r['label']:<34}{r['photos_per_s']:>9.3f}{r['vs_naive']:>9.2f}{r['jaccard']:>9.4f}"
              f"{r.get('max_dscore', float('nan')):>11.4f}{r.get('min_cos', float('nan')):>9.5f}{r['load_s']:>8.1f}"
              f"{'' if r.get('export_s') is None else format(r['export_s'], '.1f'):>9}"
              f"{'  ' + note[r['key']] if note and r['key'] in note else ''}")
    print(f"({n} photos; Jaccard = mean tag-set Jaccard with torch fp32; load includes the first photo)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kind", default="ram", choices=["ram", "ram_plus"])
    ap.add_argument("--weights", type=Path, help="a converted .safetensors (default: synthetic full-size weights)")
    ap.add_argument("--photos", type=int, default=0, help="use the first N photos (default: all)")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--batch", type=int, default=1, help="batch size (default 1: what a scan uses on a CPU)")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--keep", type=Path, help="keep the synthetic pack (weights + ONNX exports) in this folder and "
                                              "reuse it next time (default: a temp folder)")
    ap.add_argument("--avx2", action="store_true", help="also run torch and OpenVINO capped to AVX2 (subprocess)")
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)  # json: weights, sha, pack_dir, files, out
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        job = json.loads(args.child.read_text())
        rows = measure(args, Path(job["weights"]), job["sha"], Path(job["pack_dir"]), [Path(f) for f in job["files"]],
                       capped=True)
        Path(job["out"]).write_text(json.dumps(rows))
        return
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        files = []
        (tmp / "photos").mkdir()
        for i, (name, image) in enumerate(load_photos()):
            if args.photos and i >= args.photos:
                break
            files.append(tmp / "photos" / f"{i:02d}-{Path(name).stem}.jpg")
            image.save(files[-1], quality=92)
        t = time.perf_counter()
        pack = args.keep / args.kind if args.keep else tmp / "pack"
        pack.mkdir(parents=True, exist_ok=True)
        if args.weights:
            weights, sha = args.weights, sha256_file(args.weights)
        elif (pack / "weights.safetensors").is_file():
            weights, sha = pack / "weights.safetensors", sha256_file(pack / "weights.safetensors")
        else:
            weights, sha = make_weights(args.kind, pack)
        print(f"{args.kind}: weights ready in {time.perf_counter() - t:.0f} s; {len(files)} photos; {args.threads} "
              f"threads; torch {torch.__version__}; bf16 kernels: {cpu_supports_bf16()}", flush=True)
        rows = measure(args, weights, sha, pack, files, capped=False)
        print_rows(rows, f"{args.kind}, this CPU as it is", len(files))
        if args.avx2:
            job = {"weights": str(weights), "sha": sha, "pack_dir": str(pack), "files": [str(f) for f in files],
                   "out": str(tmp / "avx2.json")}
            (tmp / "job.json").write_text(json.dumps(job))
            print("\ntorch and OpenVINO capped to AVX2 (subprocess) …", flush=True)
            cmd = [sys.executable, __file__, "--kind", args.kind, "--rounds", str(args.rounds), "--batch",
                   str(args.batch), "--threads", str(args.threads), "--child", str(tmp / "job.json")]
            if subprocess.run(cmd, env={**os.environ, **AVX2_ENV}).returncode != 0:
                raise SystemExit("the AVX2-capped run failed")
            capped = json.loads((tmp / "avx2.json").read_text())
            uncapped = [dict(r, vs_naive=r["photos_per_s"] / capped[0]["photos_per_s"]) for r in rows
                        if r["key"].split()[0] == "onnxruntime"]
            print_rows(capped + uncapped, f"{args.kind}, torch and OpenVINO capped to AVX2 ({' '.join(f'{k}={v}' for k, v in AVX2_ENV.items())})",
                       len(files), {r["key"]: "(not capped: cpuid dispatch)" for r in uncapped})


if __name__ == "__main__":
    main()
