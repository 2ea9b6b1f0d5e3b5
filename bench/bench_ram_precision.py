"""RAM on this CPU: fp32 vs bf16 (autocast) photos/s and how much the tags agree, side by side in one run.

The weights are the synthetic full-size RAM state dict (manifest, seed 1234; real weights cannot be
downloaded here), converted like ``phototag models add`` does (tagging-only). Photos are real:
scikit-image / scikit-learn samples and the camera files in shared/test-photos, EXIF-oriented.
fp32 and bf16 runs alternate, so load from other processes hits both alike; minima are reported.

Agreement with random weights only shows the numeric effect of bf16 (score shifts near thresholds);
re-run with real weights (``--weights pack-dir/weights.safetensors --tags ram_tag_list.txt``) to
judge tag quality.

Run: ``.venv/bin/python bench/bench_ram_precision.py [--kind ram|ram_plus] [--rounds 2] [--batch 1 4]``
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from phototag.tagging.ram_tagger import RamTagger, cpu_supports_bf16
from phototag.tagging.synthetic import read_manifest, read_tied, synthetic_state_dict
from phototag.tagging.vocab import ram_vocabulary
from phototag.tagging.weights import prepare_state, write_converted, sha256_file

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DATA = SHARED / "ram-data" / "ram" / "data"
NAMES = {"ram": "ram_swin_l_384", "ram_plus": "ram_plus_swin_l_384"}


def load_photos() -> list[tuple[str, Image.Image]]:
    import skimage.data
    from sklearn.datasets import load_sample_images

    photos = [(n, Image.fromarray(getattr(skimage.data, n)())) for n in ("chelsea", "coffee", "astronaut", "rocket")]
    sample = load_sample_images()
    photos += [(Path(f).stem, Image.fromarray(img)) for f, img in zip(sample.filenames, sample.images)]
    tp = SHARED / "test-photos"
    for rel in ("jpeg/xmp_test.jpg", "jpeg/flower.jpg", "makers/large.jpg", "orientation/hopper_orientation_6.jpg"):
        if (tp / rel).is_file():
            with Image.open(tp / rel) as im:
                photos.append((rel, ImageOps.exif_transpose(im).convert("RGB")))
    try:
        import pillow_heif

        pillow_heif.register_heif_opener()
        with Image.open(tp / "heic/pug.heic") as im:
            photos.append(("heic/pug.heic", ImageOps.exif_transpose(im).convert("RGB")))
    except (ImportError, OSError):
        pass
    return photos


def make_weights(kind: str, workdir: Path) -> tuple[Path, str]:
    man = SHARED / "ram-data" / "manifests" / NAMES[kind]
    sd = synthetic_state_dict(read_manifest(f"{man}.tsv"), read_tied(f"{man}.tied.tsv"), seed=1234)
    state, info, model = prepare_state(sd)
    del sd
    path = workdir / "weights.safetensors"
    write_converted(path, state, info, model)
    return path, sha256_file(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kind", default="ram", choices=sorted(NAMES))
    ap.add_argument("--weights", type=Path, help="a converted .safetensors (default: synthetic weights)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if not cpu_supports_bf16():
        raise SystemExit("this CPU has no fast bf16 (AVX512-BF16/AMX): nothing to compare")
    photos = load_photos()
    vocab = ram_vocabulary(DATA / "ram_tag_list.txt", DATA / "ram_tag_list_threshold.txt", DATA / "ram_tag_list_chinese.txt")
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        weights, sha = (args.weights, sha256_file(args.weights)) if args.weights else make_weights(args.kind, Path(tmp))
        print(f"{args.kind}: weights ready in {time.perf_counter() - t:.0f} s; {len(photos)} photos; "
              f"{args.threads} threads; torch {torch.__version__}")
        taggers = {p: RamTagger("bench", args.kind, weights, vocab, sha, precision=p) for p in ("fp32", "bf16")}
        batch_all = [taggers["fp32"].prepare(im) for _, im in photos]
        for tg in taggers.values():  # load + warm up
            tg.predict(batch_all[:1])
        times: dict[tuple[str, int], list[float]] = {}
        preds = {}
        for _ in range(args.rounds):
            for bs in args.batch:
                for prec, tg in taggers.items():
                    t = time.perf_counter()
                    out = []
                    for i in range(0, len(batch_all), bs):
                        out += tg.predict(batch_all[i : i + bs])
                    times.setdefault((prec, bs), []).append(time.perf_counter() - t)
                    preds[prec] = out
        print(f"\n{'precision':<10}{'batch':>6}{'photos/s (best)':>17}{'photos/s (mean)':>17}")
        for (prec, bs), ts in sorted(times.items(), key=lambda kv: (kv[0][1], kv[0][0])):
            print(f"{prec:<10}{bs:>6}{len(photos) / min(ts):>17.3f}{len(photos) / statistics.mean(ts):>17.3f}")
        for bs in args.batch:
            ratio = min(times[("fp32", bs)]) / min(times[("bf16", bs)])
            print(f"bf16 speed-up at batch {bs}: ×{ratio:.2f}")
        jacc, same, dscore, cos, n32, n16 = [], 0, [], [], [], []
        for a, b in zip(preds["fp32"], preds["bf16"]):
            ta, tb = {t.name for t in a.tags}, {t.name for t in b.tags}
            jacc.append(len(ta & tb) / len(ta | tb) if ta | tb else 1.0)
            same += ta == tb
            dscore.append(float(np.abs(a.scores - b.scores).max()))
            cos.append(float(a.embedding @ b.embedding))
            n32.append(len(ta))
            n16.append(len(tb))
        print(f"\nagreement over {len(photos)} photos: identical tag sets {same}/{len(photos)}, "
              f"mean Jaccard {statistics.mean(jacc):.4f} (min {min(jacc):.4f}), "
              f"tags/photo fp32 {statistics.mean(n32):.1f} bf16 {statistics.mean(n16):.1f}")
        print(f"max |score difference| {max(dscore):.4f} (median over photos {statistics.median(dscore):.4f}); "
              f"embedding cosine min {min(cos):.5f}")


if __name__ == "__main__":
    main()
