"""Peak memory and time of `phototag models add` (check + convert) on an official-sized checkpoint.

Generates a full-size official-style checkpoint from the state-dict manifest (model + AdamW moments,
i.e. the size of the released file), then runs, each in a fresh process and measured with
``ru_maxrss``:

1. ``torch.load(path)`` the way the official loader does (no mmap): the baseline;
2. ``add_pack`` (weights_only + mmap read, strict checks, safetensors conversion, sha256s);
3. loading the converted pack and tagging one photo (what ``phototag scan`` pays per process).

Run: ``.venv/bin/python bench/bench_ram_convert.py [--kind ram|ram_plus|tag2text] [--workdir DIR]``
(needs ~2× the checkpoint size of free disk; the files are deleted at the end unless --keep).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MANIFESTS = REPO.parent / "shared" / "ram-data" / "manifests"
DATA = REPO.parent / "shared" / "ram-data" / "ram" / "data"
NAMES = {"ram": "ram_swin_l_384", "ram_plus": "ram_plus_swin_l_384", "tag2text": "tag2text_swin_b_384"}

MAKE = textwrap.dedent("""
    import sys, torch
    from phototag.tagging.synthetic import read_manifest, read_tied, synthetic_state_dict
    man, out = sys.argv[1], sys.argv[2]
    sd = synthetic_state_dict(read_manifest(man + ".tsv"), read_tied(man + ".tied.tsv"), 1234)
    seen, trainable = set(), []
    for k, v in sd.items():
        if v.is_floating_point() and k != "label_embed" and id(v) not in seen:
            seen.add(id(v)); trainable.append(v)
    state = {i: {"step": torch.tensor(1.0), "exp_avg": torch.zeros_like(v), "exp_avg_sq": torch.zeros_like(v)}
             for i, v in enumerate(trainable)}
    torch.save({"model": sd, "optimizer": {"state": state, "param_groups": [{"lr": 1e-5, "params": list(state)}]},
                "config": {"image_size": 384}, "epoch": 4}, out)
""")

MEASURE = textwrap.dedent("""
    import json, resource, sys, time
    t0 = time.perf_counter()
    import torch
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    step, args = sys.argv[1], sys.argv[2:]
    t = time.perf_counter()
    if step == "official_torch_load":
        # the official loader passes no flag: torch >= 2.6 then means weights_only=True, still no mmap
        ckpt = torch.load(args[0], map_location="cpu", weights_only=True)
        n = sum(v.numel() for v in ckpt["model"].values())
    elif step == "add_pack":
        from phototag.tagging.packs import add_pack
        add_pack(args[0], "bench", *args[1:])
    elif step == "tag_one_photo":
        import skimage.data
        from PIL import Image
        from phototag.tagging.packs import load_pack_tagger
        tagger = load_pack_tagger(args[0], "bench")
        tagger.predict([tagger.prepare(Image.fromarray(skimage.data.chelsea()))])
    status = open("/proc/self/status").read()
    fields = {l.split(":")[0]: int(l.split()[1]) * 1024 for l in status.splitlines()
              if l.startswith(("VmHWM", "RssAnon", "RssFile"))}
    # VmHWM rather than ru_maxrss, which Linux carries across exec from the parent
    print(json.dumps({"step": step, "seconds": time.perf_counter() - t, "peak_rss": fields["VmHWM"],
                      "rss_after_import_torch": base, **fields}))
""")


def run(code: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code, *args], check=True, capture_output=True, text=True, cwd=REPO)
    return json.loads(out.stdout.strip().splitlines()[-1]) if out.stdout.strip() else {}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kind", default="ram", choices=sorted(NAMES))
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--skip-official", action="store_true", help="skip the no-mmap torch.load baseline")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_ram_", dir=args.workdir))
    try:
        ckpt = work / f"{args.kind}.pth"
        t = time.perf_counter()
        run(MAKE, str(MANIFESTS / NAMES[args.kind]), str(ckpt))
        size = ckpt.stat().st_size
        print(f"{args.kind}: official-style checkpoint {size / 1e9:.2f} GB written in {time.perf_counter() - t:.0f} s")
        tags = [str(DATA / ("tag2text_ori_tag_list.txt" if args.kind == "tag2text" else "ram_tag_list.txt"))]
        if args.kind != "tag2text":
            tags += [str(DATA / "ram_tag_list_chinese.txt"), str(DATA / "ram_tag_list_threshold.txt")]
        results = []
        if not args.skip_official:
            results.append(run(MEASURE, "official_torch_load", str(ckpt)))
        results.append(run(MEASURE, "add_pack", str(work / "models"), str(ckpt), *tags))
        results.append(run(MEASURE, "tag_one_photo", str(work / "models")))
        weights = work / "models" / "bench" / "weights.safetensors"
        print(f"converted weights: {weights.stat().st_size / 1e9:.2f} GB")
        print(f"{'step':<22}{'seconds':>9}{'peak RSS GB':>13}{'/ file':>8}{'RssAnon GB':>12}{'RssFile GB':>12}")
        for r in results:
            print(f"{r['step']:<22}{r['seconds']:>9.1f}{r['peak_rss'] / 1e9:>13.2f}{r['peak_rss'] / size:>8.2f}"
                  f"{r.get('RssAnon', 0) / 1e9:>12.2f}{r.get('RssFile', 0) / 1e9:>12.2f}")
        print("(torch import alone: %.2f GB)" % (results[-1]["rss_after_import_torch"] / 1e9))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work}")


if __name__ == "__main__":
    main()
