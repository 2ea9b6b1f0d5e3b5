"""RAM's Swin-L image encoder: the hand-written one phototag had vs timm's SwinTransformer, side by side.

Both get the same weights — the ``visual_encoder.*`` tensors of the synthetic full-size RAM state dict
(manifest, seed 1234), through the same key handling as a real checkpoint — and the same input
(chelsea, official preprocessing). Printed: the largest difference of the 145×1536 output tokens
between the implementations, and seconds per forward at batch 1 on ``--threads`` threads (2 = the
SPEC's CPU budget). Implementations alternate round by round, so load from other processes hits all
alike; the minimum is the stable figure.

The old encoder is read from git history (``--old-commit``, the last commit that had it), so this
needs a git checkout. Columns:

* ``hand-written``: ``phototag/tagging/models/swin.py`` at ``--old-commit`` (SDPA attention);
* ``timm (SDPA)``: :class:`phototag.tagging.models.swin.RamSwin`, as phototag runs it;
* ``timm (default)``: the same with timm's default attention for Swin (q·kᵀ, softmax, ·v).

Run: ``.venv/bin/python bench/bench_swin_impl.py [--rounds 5] [--threads 2] [--batch 1]``
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path

import torch

from phototag.tagging.models.swin import SWIN_L_384, RamSwin
from phototag.tagging.synthetic import read_manifest, synthetic_state_dict
from phototag.tagging.weights import official_key_transform

REPO = Path(__file__).resolve().parents[1]
MANIFEST = REPO.parent / "shared" / "ram-data" / "manifests" / "ram_swin_l_384.tsv"
OLD_COMMIT = "905b8b07962452443c7a91f5b5f30cd39a691194"  #: last commit with the hand-written Swin
PREFIX = "visual_encoder."


def old_swin_module(commit: str) -> types.ModuleType:
    source = subprocess.run(["git", "show", f"{commit}:phototag/tagging/models/swin.py"], cwd=REPO, check=True,
                            capture_output=True, text=True).stdout
    module = types.ModuleType("old_swin")
    sys.modules[module.__name__] = module  # dataclasses look their module up
    exec(compile(source, f"{commit[:7]}:swin.py", "exec"), module.__dict__)
    return module


def encoder_state() -> dict[str, torch.Tensor]:
    """Official-layout ``visual_encoder.*`` tensors, buffers included (values depend on the full key)."""
    entries = [e for e in read_manifest(MANIFEST) if e[0].startswith(PREFIX)]
    return synthetic_state_dict(entries, seed=1234)


def chelsea(batch: int) -> torch.Tensor:
    import skimage.data
    from PIL import Image

    from phototag.tagging.ram_tagger import preprocess

    return preprocess(Image.fromarray(skimage.data.chelsea())).unsqueeze(0).repeat(batch, 1, 1, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--old-commit", default=OLD_COMMIT)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    official = encoder_state()
    old_mod = old_swin_module(args.old_commit)
    old = old_mod.SwinTransformer(old_mod.SWIN_L_384).eval()
    # the old model used the official names; the official loader drops the 35 buffers
    old.load_state_dict({k[len(PREFIX):]: v for k, v in official.items()
                         if not k.endswith(("relative_position_index", "attn_mask"))})
    ours = official_key_transform(official)
    new = RamSwin(SWIN_L_384).eval()
    new.load_state_dict({k[len(PREFIX):]: v for k, v in ours.items()}, strict=True)
    default = RamSwin(SWIN_L_384).eval()
    default.load_state_dict(new.state_dict(), strict=True)
    for module in default.modules():
        if hasattr(module, "fused_attn"):
            module.fused_attn = False
    impls = {"hand-written": old, "timm (SDPA)": new, "timm (default)": default}

    x = chelsea(args.batch)
    with torch.inference_mode():
        outs = {name: m(x) for name, m in impls.items()}  # also the warm-up
        times: dict[str, list[float]] = {name: [] for name in impls}
        for _ in range(args.rounds):
            for name, m in impls.items():
                t = time.perf_counter()
                m(x)
                times[name].append(time.perf_counter() - t)

    ref = outs["hand-written"]
    print(f"Swin-L 384 encoder, batch {args.batch}, {args.threads} threads, {args.rounds} rounds "
          f"(torch {torch.__version__}, output {tuple(ref.shape)})")
    print(f"{'':16}{'max |Δ| vs hand-written':>24}{'min s':>9}{'median s':>10}{'min vs hand-written':>21}")
    base = min(times["hand-written"])
    for name in impls:
        delta = (outs[name] - ref).abs().max().item()
        best = min(times[name])
        print(f"{name:16}{delta:>24.2e}{best:>9.3f}{statistics.median(times[name]):>10.3f}{best / base:>20.2f}×")


if __name__ == "__main__":
    main()
