"""Candidates issue 13 named that phototag does not offer, measured side by side with what they would replace.

    .venv/bin/python bench/bench_rejected.py [--kind ram_plus] [--keep DIR] [--avx2]

* ``torch.compile`` (inductor, fp32, batch 1) of the tagging path against eager torch: the compile time
  and photos/s of each, and the largest logit difference.
* OpenVINO int8 by post-training quantisation (NNCF, ``pip install nncf``; transformer model type, mixed
  preset, 18 calibration crops of the photos) against OpenVINO fp32 on the same export: photos/s and the
  tag-set Jaccard with fp32 (``auto`` needs ≥ 0.98).

``--avx2`` runs the same in a subprocess with oneDNN/OpenVINO/MKL/torch capped to AVX2 (what an
AVX2-only CPU has: no VNNI, so int8 has no fast dot-product instruction). The weights are the
synthetic full-size pack (as ``bench_backends.py``; ``--keep DIR`` reuses its pack and export), the
photos scikit-image's/scikit-learn's. Every figure is from this one run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_backends import AVX2_ENV  # noqa: E402  (same folder)
from bench_ram_precision import DATA, load_photos, make_weights  # noqa: E402

from phototag.tagging.backends.benchmark import tag_jaccard  # noqa: E402
from phototag.tagging.ram_tagger import RamTagger, preprocess  # noqa: E402
from phototag.tagging.vocab import ram_vocabulary  # noqa: E402
from phototag.tagging.weights import sha256_file  # noqa: E402


def photos_per_s(run, inputs: list, rounds: int = 2) -> tuple[float, list]:
    """Best of ``rounds`` passes over ``inputs`` (one photo at a time): photos/s and the last outputs."""
    best, outs = float("inf"), []
    for _ in range(rounds):
        t = time.perf_counter()
        outs = [run(x) for x in inputs]
        best = min(best, time.perf_counter() - t)
    return len(inputs) / best, outs


def tags_of(tagger: RamTagger, logits: list[np.ndarray]):
    from phototag.tagging.base import Prediction, TagScore

    out = []
    for row in logits:
        scores = 1.0 / (1.0 + np.exp(-row[0].astype(np.float64)))
        out.append(Prediction(tags=[TagScore(tagger.vocab.names[i], float(scores[i]))
                                    for i in tagger.vocab.selected(scores.astype(np.float32))]))
    return out


def compile_row(tagger: RamTagger, inputs: list[np.ndarray]) -> dict:
    import torch

    from phototag.tagging.backends.export import tagging_path_module

    module = tagging_path_module(tagger._load_torch_model())
    xs = [torch.from_numpy(x)[None] for x in inputs]
    with torch.inference_mode():
        eager_ps, eager = photos_per_s(lambda x: module(x)[0], xs)
        compiled = torch.compile(module)
        t = time.perf_counter()
        compiled(xs[0])
        compile_s = time.perf_counter() - t
        comp_ps, comp = photos_per_s(lambda x: compiled(x)[0], xs)
    return {"eager": eager_ps, "compiled": comp_ps, "compile_s": compile_s,
            "max_dlogit": max(float((a - b).abs().max()) for a, b in zip(eager, comp))}


def calibration(images, per_photo: int = 3) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    out = []
    for image in images:
        w, h = image.size
        for _ in range(per_photo):
            s = rng.uniform(0.5, 0.9)
            cw, ch = int(w * s), int(h * s)
            x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            out.append(preprocess(image.crop((x, y, x + cw, y + ch)))[None])
    return out


def int8_row(tagger: RamTagger, images, inputs: list[np.ndarray], workdir: Path) -> dict:
    import openvino as ov

    try:
        import nncf
    except ImportError:
        return {"skipped": "nncf is not installed (pip install nncf)"}
    core = ov.Core()
    exported = tagger.export()
    quantised = workdir / "nncf-int8.xml"  # made once per pack folder (--keep reuses it)
    t = time.perf_counter()
    if not quantised.is_file():
        model = nncf.quantize(core.read_model(str(exported)), nncf.Dataset(calibration(images)),
                              model_type=nncf.ModelType.TRANSFORMER, preset=nncf.QuantizationPreset.MIXED,
                              subset_size=3 * len(images), fast_bias_correction=True)
        ov.save_model(model, str(quantised), compress_to_fp16=False)
    quantise_s = time.perf_counter() - t
    config = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1,
              "INFERENCE_NUM_THREADS": os.cpu_count() or 1}
    row = {"quantise_s": quantise_s}
    outputs = {}
    for name, path in (("fp32", exported), ("int8", quantised)):
        compiled = core.compile_model(str(path), "CPU", config)
        request = compiled.create_infer_request()
        request.infer({0: inputs[0][None]})
        row[name], logits = photos_per_s(lambda x: np.array(request.infer({0: x[None]})[compiled.outputs[0]]), inputs)
        outputs[name] = tags_of(tagger, logits)
    row["jaccard"] = tag_jaccard(outputs["fp32"], outputs["int8"])
    return row


def run(args, workdir: Path) -> dict:
    pack = args.keep / args.kind if args.keep else workdir / "pack"
    pack.mkdir(parents=True, exist_ok=True)
    weights = pack / "weights.safetensors"
    sha = sha256_file(weights) if weights.is_file() else make_weights(args.kind, pack)[1]
    vocab = ram_vocabulary(DATA / "ram_tag_list.txt", DATA / "ram_tag_list_threshold.txt",
                           DATA / "ram_tag_list_chinese.txt")
    tagger = RamTagger("bench", args.kind, weights, vocab, sha, backend="openvino", precision="fp32", pack_dir=pack)
    images = [im.convert("RGB") for _, im in load_photos()[:6]]
    inputs = [preprocess(im) for im in images]
    return {"compile": compile_row(tagger, inputs), "int8": int8_row(tagger, images, inputs, pack)}


def show(result: dict, title: str) -> None:
    print(f"\n{title}")
    c = result["compile"]
    print(f"  torch eager fp32            {c['eager']:.3f} photos/s")
    print(f"  torch.compile fp32          {c['compiled']:.3f} photos/s  ({c['compiled'] / c['eager']:.2f}× eager; "
          f"compile {c['compile_s']:.0f} s; max |Δlogit| {c['max_dlogit']:.1e})")
    q = result["int8"]
    if "skipped" in q:
        print(f"  openvino int8: {q['skipped']}")
        return
    print(f"  openvino fp32               {q['fp32']:.3f} photos/s")
    print(f"  openvino int8 (NNCF PTQ)    {q['int8']:.3f} photos/s  ({q['int8'] / q['fp32']:.2f}× fp32; Jaccard "
          f"{q['jaccard']:.4f}{'' if q['jaccard'] >= 0.98 else ', not eligible'}; quantised in {q['quantise_s']:.0f} s)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kind", default="ram_plus", choices=["ram", "ram_plus"])
    ap.add_argument("--keep", type=Path, help="the folder bench_backends.py --keep made (its pack and export)")
    ap.add_argument("--avx2", action="store_true", help="also run capped to AVX2 (subprocess)")
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.child:
            args.child.write_text(json.dumps(run(args, Path(tmp))))
            return
        show(run(args, Path(tmp)), f"{args.kind}, this CPU as it is")
        if args.avx2:
            out = Path(tmp) / "avx2.json"
            cmd = [sys.executable, __file__, "--kind", args.kind, "--child", str(out)]
            cmd += ["--keep", str(args.keep)] if args.keep else []
            subprocess.run(cmd, env={**os.environ, **AVX2_ENV}, check=True)
            show(json.loads(out.read_text()), f"{args.kind}, capped to AVX2 ({' '.join(f'{k}={v}' for k, v in AVX2_ENV.items())})")


if __name__ == "__main__":
    main()
